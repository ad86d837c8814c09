"""Engines for the two supported databases: SQLite (embedded) and PostgreSQL (distributed)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


def durably(engine: Engine) -> Connection:
    """A connection whose transactions are on disk once they commit. On SQLite they run with
    ``synchronous=FULL`` (the write-ahead log is synced at every commit; the store's usual ``NORMAL`` syncs it
    only at checkpoints, so a power cut may take back the last commits). PostgreSQL syncs at commit unless its
    server is set otherwise (``synchronous_commit``)."""
    return engine.connect().execution_options(durable=True)


_BUSY_SECONDS = 60
SQLITE_CACHE_KIB = 2000
"""Page cache of each SQLite connection: a few MB, so that memory stays flat however many connections."""
_WRITING = "tranche.writing"
_DURABLE = "tranche.durable"


@contextmanager
def larger_cache(conn: Connection, kib: int) -> Iterator[None]:
    """On SQLite, a page cache of ``kib`` KiB for this connection within the block, then the usual size
    (:data:`SQLITE_CACHE_KIB`) again, which frees the rest. For a transaction that writes tens of thousands
    of rows into several indexes: with the usual cache, their pages would be spilled and read back."""
    if conn.dialect.name != "sqlite" or kib <= SQLITE_CACHE_KIB:
        yield
        return
    conn.exec_driver_sql(f"PRAGMA cache_size=-{int(kib)}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")


POSTGRES_CONNECT_ARGS: dict[str, Any] = {
    # A server that is down answers at once; one that is unreachable must not hang a worker for minutes.
    "connect_timeout": 5,
    # A dead peer is noticed in about 10 s (5 s idle, then 3 probes 2 s apart) rather than the kernel's two
    # hours: the server frees a dead owner's advisory locks (tranche.store.ownership), and a process whose
    # server vanished gets an error instead of waiting on a socket.
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
"""libpq settings of every PostgreSQL connection."""


def create_store_engine(url: str, **kwargs: Any) -> Engine:
    """An Engine for ``sqlite:///path`` or ``postgresql+psycopg://...``.

    SQLite gets WAL, ``synchronous=NORMAL``, foreign keys, a busy timeout, and ``BEGIN IMMEDIATE`` for every
    transaction so that two writers queue instead of failing on a lock upgrade. The writers of one process
    queue on a lock of their own first: SQLite's busy handler polls, sleeping up to 100 ms between tries,
    which would leave the database idle while threads of the same process sleep; a lock hands over at once.
    """
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": _BUSY_SECONDS, "isolation_level": None}, **kwargs
        )
        writer = threading.Lock()

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={_BUSY_SECONDS * 1000}")
            cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # Readers (execution option readonly=True) take no write lock; WAL lets them run beside the writer.
            if conn.get_execution_options().get("readonly"):
                conn.exec_driver_sql("BEGIN")
                return
            if not writer.acquire(timeout=_BUSY_SECONDS):
                raise TimeoutError(f"no write transaction on {parsed.database} within {_BUSY_SECONDS} s")
            try:
                if conn.get_execution_options().get("durable"):
                    # Set outside the transaction, where SQLite is sure to take it; reset when it ends.
                    conn.exec_driver_sql("PRAGMA synchronous=FULL")
                    conn.info[_DURABLE] = True
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                _restore(conn)
                writer.release()
                raise
            conn.info[_WRITING] = True

        # These events come before the driver's own commit or rollback, so the transaction ends here, and
        # only then is the lock handed on; the driver then finds no transaction left to end.
        @event.listens_for(engine, "commit")
        def _commit(conn: Connection) -> None:
            _end(conn, "COMMIT")

        @event.listens_for(engine, "rollback")
        def _rollback(conn: Connection) -> None:
            _end(conn, "ROLLBACK")

        def _end(conn: Connection, statement: str) -> None:
            if not conn.info.pop(_WRITING, False):
                return
            try:
                driver = conn.connection.driver_connection
                if driver is not None and driver.in_transaction:
                    driver.execute(statement)
            finally:
                _restore(conn)
                writer.release()

        def _restore(conn: Connection) -> None:
            if conn.info.pop(_DURABLE, False):
                driver = conn.connection.driver_connection
                if driver is not None:
                    driver.execute("PRAGMA synchronous=NORMAL")

        return engine
    if parsed.get_backend_name() == "postgresql":
        connect_args = dict(POSTGRES_CONNECT_ARGS)
        connect_args.update(kwargs.pop("connect_args", {}))
        kwargs["connect_args"] = connect_args
        if "poolclass" not in kwargs:
            kwargs.setdefault("pool_size", 10)
            kwargs.setdefault("max_overflow", 10)
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(url, **kwargs)
    raise ValidationError(
        f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql://",
        field="TRANCHE_DATABASE_URL",
    )
