"""Pipeline throughput: items claimed and committed per second, on SQLite and PostgreSQL.

    python bench/pipeline.py            20,000 items per measurement
    python bench/pipeline.py --quick    2,000 items per measurement

Each item goes through one trivial stage (no ``work``; ``commit`` returns ``Next(None)``), so what is measured
is the pipeline's own cost: the claim (a select of due items and an update of ``claim_batch`` of them, with
their trace rows) and the fenced completion (one transaction per item: the guarded update and its trace row).

- ``run_until_idle``: one thread, claiming 8 and 32 at a time;
- ``threads``: ``PipelineRunner.start()`` with 4 workers on the stage (SKIP LOCKED on PostgreSQL; on SQLite
  the writers queue behind ``BEGIN IMMEDIATE``); again with 100 lenders pinned to another live worker, so
  that every claim leaves 100 partitions out (the cost of routing by key); and as two runners of two
  threads each, named differently (two workers sharing the queue).
- ``restart``: a worker process holding leases of 120 s is killed (SIGKILL) and started again; seconds from
  the restart until the dead process's items are claimed again, beside the seconds the new process needs to
  start and register (its floor: nothing can resume before the process runs).

The floor, measured in the same run on the same rows: a bare ``UPDATE pipeline_items SET status = 'done'
WHERE id = ?`` per item, each in its own transaction (the durability unit the pipeline pays per item), and the
same updates as one ``executemany`` per 1,000 rows (what no per-item transaction would cost).
The PostgreSQL server is a throwaway one (``tranche.testing.postgres``) with fsync off, as in the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, delete, func, select, update
from sqlalchemy.pool import NullPool

from tranche.pipeline import Item, NewItem, Next, Pipeline, PipelineRunner, Stage, pin
from tranche.pipeline.store import insert_items
from tranche.pipeline.tables import pipeline_items, pipeline_pins, pipeline_trace, pipeline_workers
from tranche.pipeline.workers import Node, register
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
        conn.execute(delete(pipeline_workers))
        conn.execute(delete(pipeline_pins))
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


def measure_threads(engine: Engine, count: int, workers: int, *, runners: int = 1, pins: int = 0) -> float:
    reset(engine, count)
    if pins:
        now = SystemClock().now()
        with engine.begin() as conn:
            register(
                conn,
                worker_id="elsewhere-1",
                name="elsewhere",
                node=Node("another-host", "boot", "ns"),
                pid=1,
                started="1",
                now=now,
            )
            for n in range(pins):
                pin(conn, f"pinned-{n}", "elsewhere", now=now)
    started = time.perf_counter()
    started_runners = [
        PipelineRunner(engine, [pipeline(8, workers)], clock=SystemClock(), name=f"bench-{n}")
        for n in range(runners)
    ]
    for runner in started_runners:
        runner.start()
    try:
        assert all(runner.wait_idle(600) for runner in started_runners)
    finally:
        for runner in started_runners:
            runner.stop()
    elapsed = time.perf_counter() - started
    assert done(engine) == count
    if pins:
        assert all(len(runner.excluded) == pins for runner in started_runners)
    return count / elapsed


def slow(item: Item) -> None:
    time.sleep(0.02)


def failover_pipeline() -> Pipeline:
    return Pipeline(
        "bench", [Stage("bench.only", finish, work=slow, lease_seconds=120.0, claim_batch=8, concurrency=2)]
    )


def worker_process(url: str, owner: str) -> None:
    """``python bench/pipeline.py --worker URL OWNER``: run the failover pipeline until killed."""
    runner = PipelineRunner(
        create_store_engine(url), [failover_pipeline()], clock=SystemClock(), name="bench-node", owner=owner
    )
    runner.start()
    print("started", flush=True)
    while True:
        time.sleep(1)


def spawn_worker(url: str, owner: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--worker", url, owner],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    return process


def leased_by(engine: Engine, owner: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(pipeline_items)
                .where(pipeline_items.c.status == "leased", pipeline_items.c.lease_owner == owner)
            ).scalar_one()
        )


def measure_restart(engine: Engine, url: str) -> dict[str, float]:
    """Kill a worker holding 120 s leases, start it again: seconds until its items are claimed again."""
    reset(engine, 400)
    doomed = spawn_worker(url, "doomed")
    assert doomed.stdout is not None and doomed.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 60
    while leased_by(engine, "doomed") < 8 and time.monotonic() < deadline:
        time.sleep(0.002)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    held = leased_by(engine, "doomed")
    restarted = time.perf_counter()
    successor = spawn_worker(url, "successor")
    try:
        assert successor.stdout is not None and successor.stdout.readline().strip() == "started"
        running = time.perf_counter() - restarted
        while leased_by(engine, "doomed") and time.monotonic() < deadline + 120:
            time.sleep(0.002)
        resumed = time.perf_counter() - restarted
    finally:
        successor.send_signal(signal.SIGKILL)
        successor.wait(10)
    assert leased_by(engine, "doomed") == 0
    return {
        "items_held_when_killed": held,
        "restart_resumed_seconds": resumed,
        "floor_process_start_seconds": running,
    }


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


def run_backend(name: str, engine: Engine, count: int, url: str) -> dict[str, float]:
    figures = {
        "floor_update_per_transaction": floor_per_row(engine, count),
        "floor_update_bulk": floor_bulk(engine, count),
        "run_until_idle_claim_8": measure_single(engine, count, 8),
        "run_until_idle_claim_32": measure_single(engine, count, 32),
        "threads_4_claim_8": measure_threads(engine, count, 4),
        "threads_4_claim_8_100_pins_elsewhere": measure_threads(engine, count, 4, pins=100),
        "two_runners_2_threads_claim_8": measure_threads(engine, count, 2, runners=2),
    }
    floor = figures["floor_update_per_transaction"]
    print(f"\n{name}: {count:,} items, one trivial stage")
    for key, value in figures.items():
        ratio = (
            "" if key.startswith("floor") else f"   {value / floor:5.2f} x floor (one UPDATE per transaction)"
        )
        print(f"  {key:38s} {value:10,.0f} items/s{ratio}")
    restart = measure_restart(engine, url)
    print(
        f"  restart after SIGKILL, 120 s leases: {restart['items_held_when_killed']:.0f} items held, claimed again "
        f"{restart['restart_resumed_seconds']:.2f} s after the restart (floor: the process starts and registers "
        f"in {restart['floor_process_start_seconds']:.2f} s)"
    )
    return {**figures, **restart}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2,000 items instead of 20,000")
    parser.add_argument("--worker", nargs=2, metavar=("URL", "OWNER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_process(*args.worker)
        return 0
    count = 2_000 if args.quick else 20_000
    results: dict[str, Any] = {"items": count, "quick": args.quick}

    with tempfile.TemporaryDirectory(prefix="tranche-bench-pipeline-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        engine = create_store_engine(url)
        upgrade(engine)
        results["sqlite"] = run_backend("SQLite (WAL, synchronous=NORMAL)", engine, count, url)
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
            results["postgresql"] = run_backend(
                "PostgreSQL 15 (throwaway server, fsync off)", engine, count, server.url("bench")
            )
            engine.dispose()
        finally:
            server.stop()

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
