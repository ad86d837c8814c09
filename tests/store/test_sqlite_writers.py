"""SQLite writers of one process queue on the engine's lock; the lock is handed on after every commit and
rollback, whatever ends the transaction."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from tranche.store.engine import create_store_engine, reading


def test_many_threads_write_and_fail_and_every_commit_lands(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))

    def write(start: int) -> None:
        for n in range(start, start + 50):
            try:
                with engine.begin() as conn:
                    conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
                    if n % 7 == 0:
                        raise RuntimeError("rolled back on purpose")
            except RuntimeError:
                pass

    threads = [threading.Thread(target=write, args=(k * 50,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    with reading(engine) as conn:
        stored = {n for (n,) in conn.execute(text("SELECT n FROM t"))}
    assert stored == {n for n in range(300) if n % 7}
    engine.dispose()


def test_a_failed_statement_in_a_transaction_releases_the_writer(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with pytest.raises(Exception, match="no such table"), engine.begin() as conn:
        conn.execute(text("INSERT INTO missing VALUES (1)"))
    done = threading.Event()

    def write() -> None:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (n INTEGER)"))
        done.set()

    threading.Thread(target=write).start()
    assert done.wait(10)
    engine.dispose()
