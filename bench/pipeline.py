"""Pipeline throughput: items claimed and committed per second, on SQLite and PostgreSQL.

    python bench/pipeline.py            20,000 items per measurement
    python bench/pipeline.py --quick    2,000 items per measurement

Each item goes through one trivial stage (no ``work``; ``commit`` returns ``Next(None)``), so what is measured
is the pipeline's own cost: the claim (a select of due items and an update of ``claim_batch`` of them, with
their trace rows) and the fenced completion (one transaction per item: the guarded update and its trace row).

- ``run_until_idle``: one thread, claiming 8 and 32 at a time;
- ``threads``: ``PipelineRunner.start()`` with 4 workers on the stage (SKIP LOCKED on PostgreSQL; on SQLite
  the writers queue behind ``BEGIN IMMEDIATE``).

The floor, measured in the same run on the same rows: a bare ``UPDATE pipeline_items SET status = 'done'
WHERE id = ?`` per item, each in its own transaction (the durability unit the pipeline pays per item), and the
same updates as one ``executemany`` per 1,000 rows (what no per-item transaction would cost).
The PostgreSQL server is a throwaway one (``tranche.testing.postgres``) with fsync off, as in the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, delete, func, select, update
from sqlalchemy.pool import NullPool

from tranche.pipeline import Item, NewItem, Next, Pipeline, PipelineRunner, Stage
from tranche.pipeline.store import insert_items
from tranche.pipeline.tables import pipeline_items, pipeline_trace
from tranche.shared.clock import SystemClock
from tranche.store.engine import create_store_engine
from tranche.store.migrate import upgrade
from tranche.testing.postgres import PostgresServer, ServerUnavailable

RESULTS = Path(__file__).with_name("results") / "pipeline.json"


def finish(conn: Any, item: Item, result: Any) -> Next:
    return Next(None)


def reset(engine: Engine, count: int) -> list[str]:
    with engine.begin() as conn:
        conn.execute(delete(pipeline_items))
        conn.execute(delete(pipeline_trace))
    ids: list[str] = []
    now = datetime.now(UTC)
    chunk = 1000
    for start in range(0, count, chunk):
        with engine.begin() as conn:
            ids += insert_items(
                conn,
                "bench",
                (
                    NewItem("bench.only", {"n": n}, partition=f"lender-{n % 10}", sequence=1)
                    for n in range(start, min(start + chunk, count))
                ),
                now,
            )
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE pipeline_items")
    return ids


def done(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(pipeline_items).where(pipeline_items.c.status == "done")
            ).scalar_one()
        )


def pipeline(claim_batch: int, concurrency: int = 1) -> Pipeline:
    return Pipeline("bench", [Stage("bench.only", finish, claim_batch=claim_batch, concurrency=concurrency)])


def measure_single(engine: Engine, count: int, claim_batch: int) -> float:
    reset(engine, count)
    runner = PipelineRunner(engine, [pipeline(claim_batch)], clock=SystemClock())
    started = time.perf_counter()
    processed = runner.run_until_idle()
    elapsed = time.perf_counter() - started
    assert processed == count == done(engine), (processed, count)
    return count / elapsed


def measure_threads(engine: Engine, count: int, workers: int) -> float:
    reset(engine, count)
    runner = PipelineRunner(engine, [pipeline(8, workers)], clock=SystemClock())
    started = time.perf_counter()
    runner.start()
    try:
        assert runner.wait_idle(600)
    finally:
        runner.stop()
    elapsed = time.perf_counter() - started
    assert done(engine) == count
    return count / elapsed


def floor_per_row(engine: Engine, count: int) -> float:
    ids = reset(engine, count)
    statement = update(pipeline_items).where(pipeline_items.c.id == bindparam("item")).values(status="done")
    started = time.perf_counter()
    with engine.connect() as conn:
        for item_id in ids:
            with conn.begin():
                conn.execute(statement, {"item": item_id})
    return count / (time.perf_counter() - started)


def floor_bulk(engine: Engine, count: int) -> float:
    ids = reset(engine, count)
    statement = update(pipeline_items).where(pipeline_items.c.id == bindparam("item")).values(status="done")
    started = time.perf_counter()
    with engine.connect() as conn:
        for start in range(0, count, 1000):
            with conn.begin():
                conn.execute(statement, [{"item": i} for i in ids[start : start + 1000]])
    return count / (time.perf_counter() - started)


def run_backend(name: str, engine: Engine, count: int) -> dict[str, float]:
    figures = {
        "floor_update_per_transaction": floor_per_row(engine, count),
        "floor_update_bulk": floor_bulk(engine, count),
        "run_until_idle_claim_8": measure_single(engine, count, 8),
        "run_until_idle_claim_32": measure_single(engine, count, 32),
        "threads_4_claim_8": measure_threads(engine, count, 4),
    }
    floor = figures["floor_update_per_transaction"]
    print(f"\n{name}: {count:,} items, one trivial stage")
    for key, value in figures.items():
        ratio = (
            "" if key.startswith("floor") else f"   {value / floor:5.2f} x floor (one UPDATE per transaction)"
        )
        print(f"  {key:32s} {value:10,.0f} items/s{ratio}")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2,000 items instead of 20,000")
    args = parser.parse_args()
    count = 2_000 if args.quick else 20_000
    results: dict[str, Any] = {"items": count, "quick": args.quick}

    with tempfile.TemporaryDirectory(prefix="tranche-bench-pipeline-") as tmp:
        engine = create_store_engine(f"sqlite:///{tmp}/bench.db")
        upgrade(engine)
        results["sqlite"] = run_backend("SQLite (WAL, synchronous=NORMAL)", engine, count)
        engine.dispose()

    try:
        server = PostgresServer().start()
    except ServerUnavailable as exc:
        print(f"\nPostgreSQL unavailable, skipped: {exc}", file=sys.stderr)
        results["postgresql"] = None
    else:
        try:
            engine = create_store_engine(server.create_database("bench"), poolclass=NullPool)
            engine.dispose()
            engine = create_store_engine(server.url("bench"))
            upgrade(engine)
            results["postgresql"] = run_backend("PostgreSQL 15 (throwaway server, fsync off)", engine, count)
            engine.dispose()
        finally:
            server.stop()

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
