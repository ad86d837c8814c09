"""Engines for the two supported databases: SQLite (embedded) and PostgreSQL (distributed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from tranche.shared.errors import ValidationError


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use psycopg 3 for them."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def reading(engine: Engine) -> Connection:
    """A connection for reads only: on SQLite it does not queue behind the writer."""
    return engine.connect().execution_options(readonly=True)


def create_store_engine(url: str, **kwargs: Any) -> Engine:
    """An Engine for ``sqlite:///path`` or ``postgresql+psycopg://...``.

    SQLite gets WAL, ``synchronous=NORMAL``, foreign keys, a busy timeout, and ``BEGIN IMMEDIATE`` for every
    transaction so that two writers queue instead of failing on a lock upgrade.
    """
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "isolation_level": None}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.execute("PRAGMA cache_size=-4000")  # 4 MB per connection: memory stays flat
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # Readers (execution option readonly=True) take no write lock; WAL lets them run beside the writer.
            conn.exec_driver_sql(
                "BEGIN" if conn.get_execution_options().get("readonly") else "BEGIN IMMEDIATE"
            )

        return engine
    if parsed.get_backend_name() == "postgresql":
        if "poolclass" not in kwargs:
            kwargs.setdefault("pool_size", 10)
            kwargs.setdefault("max_overflow", 10)
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(url, **kwargs)
    raise ValidationError(
        f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql://",
        field="TRANCHE_DATABASE_URL",
    )
