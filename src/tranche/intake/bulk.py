"""The store's hot path for intake: writing many loan versions and finding many loans' last versions.

A tape brings up to millions of loans, so these two operations skip SQLAlchemy's per-row machinery and
speak to the driver directly: ``executemany`` with tuples on SQLite, ``COPY`` on PostgreSQL; the lookup is
one statement per slice with the driver's tuples. Everything else in intake goes through SQLAlchemy Core.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection

from tranche.intake.tables import loan_versions

COLUMNS: tuple[str, ...] = tuple(c.name for c in loan_versions.columns)
_SQLITE_INSERT = f"INSERT INTO loan_versions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_PG_COPY = f"COPY loan_versions ({', '.join(COLUMNS)}) FROM STDIN"


class VersionWriter:
    """Formats values the way the connection's dialect stores them, and writes rows in bulk."""

    def __init__(self, conn: Connection) -> None:
        self.sqlite = conn.dialect.name == "sqlite"
        self._recorded_at = loan_versions.c.recorded_at.type._cached_bind_processor(conn.dialect)

    def day(self, value: date | None) -> Any:
        if value is None or not self.sqlite:
            return value
        return value.isoformat()  # SQLAlchemy's storage format for Date on SQLite

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


def latest_heads(conn: Connection, lender_id: str, loan_ids: Sequence[str]) -> list[tuple[Any, ...]]:
    """(loan_id, version, raw_hash, content_hash, status, batch_sequence) of each loan's last version."""
    if not loan_ids:
        return []
    raw = conn.connection.driver_connection
    assert raw is not None
    if conn.dialect.name == "sqlite":
        # SQLite takes the other columns from the row that holds max(version).
        marks = ",".join("?" * len(loan_ids))
        cursor = raw.execute(
            "SELECT loan_id, max(version), raw_hash, content_hash, status, batch_sequence FROM loan_versions"
            f" WHERE lender_id = ? AND loan_id IN ({marks}) GROUP BY loan_id",
            (lender_id, *loan_ids),
        )
        return list(cursor.fetchall())
    with raw.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT ON (loan_id) loan_id, version, raw_hash, content_hash, status, batch_sequence"
            " FROM loan_versions WHERE lender_id = %s AND loan_id = ANY(%s) ORDER BY loan_id, version DESC",
            (lender_id, list(loan_ids)),
        )
        return list(cursor.fetchall())
