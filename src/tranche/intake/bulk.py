"""The store's hot path for intake: writing many loan versions, finding which loans a tape changes, and
reading a slice's versions back.

A tape brings up to millions of loans, so these operations skip SQLAlchemy's per-row machinery and speak
to the driver directly: ``executemany`` with tuples on SQLite, ``COPY`` on PostgreSQL; a look-up joins the
slice's keys with the table in one statement (``VALUES`` on SQLite, ``unnest`` on PostgreSQL), so that each
key is one index look-up. Everything else in intake goes through SQLAlchemy Core.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from tranche.intake.heads import KEYS_PER_STATEMENT, sqlite_changed_heads
from tranche.intake.tables import loan_versions

COLUMNS: tuple[str, ...] = tuple(c.name for c in loan_versions.columns)
_SQLITE_INSERT = f"INSERT INTO loan_versions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_PG_COPY = f"COPY loan_versions ({', '.join(COLUMNS)}) FROM STDIN"


class VersionWriter:
    """Formats values the way the connection's dialect stores them, and writes rows in bulk."""

    def __init__(self, bind: Connection | Engine) -> None:
        self.sqlite = bind.dialect.name == "sqlite"
        self._recorded_at = loan_versions.c.recorded_at.type._cached_bind_processor(bind.dialect)

    def moment(self, value: datetime) -> Any:
        return self._recorded_at(value) if self._recorded_at is not None else value

    def write(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        raw = conn.connection.driver_connection
        assert raw is not None
        if self.sqlite:
            raw.executemany(_SQLITE_INSERT, rows)
            return
        with raw.cursor() as cursor, cursor.copy(_PG_COPY) as copy:
            for row in rows:
                copy.write_row(row)


_PG_CHANGED = (
    "SELECT w.loan_id, h.version, h.raw_hash, h.content_hash, h.status, h.batch_sequence"
    " FROM unnest(%s::text[], %s::bytea[]) AS w(loan_id, raw_hash)"
    " LEFT JOIN LATERAL (SELECT v.version, v.raw_hash, v.content_hash, v.status, v.batch_sequence"
    " FROM loan_versions AS v WHERE v.lender_id = %s AND v.loan_id = w.loan_id"
    " ORDER BY v.version DESC LIMIT 1) AS h ON true"
    " WHERE h.version IS NULL OR (h.raw_hash <> w.raw_hash AND h.batch_sequence <= %s)"
)


def changed_heads(
    conn: Connection, lender_id: str, keys: Sequence[tuple[str, bytes]], sequence: int
) -> list[tuple[Any, ...]]:
    """Of the loans named by (loan_id, raw hash of the document just received), those the document may
    change: (loan_id, version, raw_hash, content_hash, status, batch_sequence) of the last version, or
    (loan_id, None, ...) for a loan never seen. Left out are the unchanged loans (same bytes as the last
    version) and those a later tape than ``sequence`` already superseded.

    The comparison runs in the database, so a tape of unchanged loans hands back almost nothing.
    """
    raw = conn.connection.driver_connection
    assert raw is not None
    if conn.dialect.name == "sqlite":
        return sqlite_changed_heads(raw, lender_id, keys, sequence)
    rows: list[tuple[Any, ...]] = []
    for start in range(0, len(keys), KEYS_PER_STATEMENT):
        chunk = keys[start : start + KEYS_PER_STATEMENT]
        with raw.cursor() as cursor:
            cursor.execute(_PG_CHANGED, ([k for k, _ in chunk], [h for _, h in chunk], lender_id, sequence))
            rows.extend(cursor.fetchall())
    return rows


def rows_by_version(
    conn: Connection, lender_id: str, keys: Sequence[tuple[str, int]], columns: str
) -> list[tuple[Any, ...]]:
    """``columns`` (of ``loan_versions AS v``, the first two ``v.loan_id, v.version``) of the versions named by
    (loan_id, version), in that order, those missing left out.

    The keys are joined with the table, so that each is one look-up in the primary key: a ``(loan_id,
    version) IN (...)`` makes SQLite scan every version of the lender.
    """
    raw = conn.connection.driver_connection
    assert raw is not None
    rows: list[Any] = []
    for start in range(0, len(keys), KEYS_PER_STATEMENT):
        chunk = keys[start : start + KEYS_PER_STATEMENT]
        if conn.dialect.name == "sqlite":
            pairs = ",".join("(?,?)" for _ in chunk)
            rows.extend(
                raw.execute(
                    f"SELECT {columns} FROM (VALUES {pairs}) AS w JOIN loan_versions AS v"
                    " ON v.lender_id = ? AND v.loan_id = w.column1 AND v.version = w.column2",
                    (*(part for key in chunk for part in key), lender_id),
                ).fetchall()
            )
        else:
            with raw.cursor() as cursor:
                cursor.execute(
                    f"SELECT {columns} FROM unnest(%s::text[], %s::int[]) AS w(loan_id, version)"
                    " JOIN loan_versions AS v"
                    " ON v.lender_id = %s AND v.loan_id = w.loan_id AND v.version = w.version",
                    ([k for k, _ in chunk], [v for _, v in chunk], lender_id),
                )
                rows.extend(cursor.fetchall())
    found = {(r[0], int(r[1])): tuple(r) for r in rows}
    return [found[key] for key in keys if key in found]
