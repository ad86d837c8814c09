"""The last stored version of each loan a slice names, as the diff needs it: looked up in one statement that
joins the slice's keys with the covering index ``ix_loan_versions_head``, so that each key is one index
look-up and a tape of unchanged loans hands back almost nothing.

This module speaks to SQLite's own driver and imports nothing else of the store, so that a pool's worker can
look the heads up itself (see :func:`tranche.intake.parsing.diff_slice`); the store's function for both
databases is :func:`tranche.intake.bulk.changed_heads`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, NamedTuple

KEYS_PER_STATEMENT = 5000  # two parameters a key: well under SQLite's limit of 32766

SQLITE_CHANGED = (
    "SELECT w.column1, h.version, h.raw_hash, h.content_hash, h.status, h.batch_sequence"
    " FROM (VALUES {values}) AS w"
    " LEFT JOIN loan_versions AS h INDEXED BY ix_loan_versions_head"
    " ON h.lender_id = ? AND h.loan_id = w.column1 AND h.version ="
    " (SELECT max(m.version) FROM loan_versions AS m WHERE m.lender_id = ? AND m.loan_id = w.column1)"
    " WHERE h.version IS NULL OR (h.raw_hash <> w.column2 AND h.batch_sequence <= ?)"
)


class Head(NamedTuple):
    """What the diff needs of a loan's last stored version."""

    version: int
    raw_hash: bytes
    content_hash: bytes
    status: str
    batch_sequence: int


def head_of(row: Sequence[Any]) -> Head | None:
    """The :class:`Head` of a row of :func:`sqlite_changed_heads` (or its PostgreSQL twin); None for a loan
    never seen."""
    if row[1] is None:
        return None
    return Head(int(row[1]), bytes(row[2]), bytes(row[3]), row[4], int(row[5]))


def sqlite_changed_heads(
    raw: sqlite3.Connection, lender_id: str, keys: Sequence[tuple[str, bytes]], sequence: int
) -> list[tuple[Any, ...]]:
    """:func:`tranche.intake.bulk.changed_heads` on a connection of SQLite's own driver."""
    rows: list[tuple[Any, ...]] = []
    for start in range(0, len(keys), KEYS_PER_STATEMENT):
        chunk = keys[start : start + KEYS_PER_STATEMENT]
        statement = SQLITE_CHANGED.format(values=",".join("(?,?)" for _ in chunk))
        params = (*(part for key in chunk for part in key), lender_id, lender_id, sequence)
        rows.extend(raw.execute(statement, params).fetchall())
    return rows
