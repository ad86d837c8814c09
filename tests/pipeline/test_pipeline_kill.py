"""Workers killed with SIGKILL mid-item: the items they held are taken over (at once by a worker restarted on
the same node, whatever their leases say), and every item is applied exactly once at every stage."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline_kill_worker import kill_pipeline
from pipeline_toys import create_effects, doubled, effect_rows, put
from sqlalchemy import Engine, select

from tranche.pipeline import PipelineRunner
from tranche.pipeline.tables import pipeline_items, pipeline_trace
from tranche.shared.clock import SystemClock

WORKER = Path(__file__).with_name("pipeline_kill_worker.py")
ITEMS = 40


def spawn(
    database_url: str, owner: str, lease_seconds: float = 1.0, name: str = "kill-worker"
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(WORKER), database_url, owner, str(lease_seconds), name],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "started"
    return process


def leased_by(engine: Engine, owner: str) -> int:
    with engine.connect() as conn:
        rows = conn.execute(
            select(pipeline_items.c.id).where(
                pipeline_items.c.status == "leased", pipeline_items.c.lease_owner == owner
            )
        )
        return len(rows.all())


def test_workers_killed_mid_item_lose_nothing_and_double_nothing(engine: Engine, database_url: str) -> None:
    create_effects(engine)
    for batch in range(1, 5):
        put(engine, "toy.read", partition="lender-1", sequence=batch, count=ITEMS // 4)
    rng = random.Random(11)
    held_when_killed = 0
    for round_ in range(3):
        owner = f"doomed-{round_}"
        process = spawn(database_url, owner)
        deadline = time.monotonic() + 20
        # Kill at a random moment once the worker holds at least one lease.
        time.sleep(rng.uniform(0.1, 0.6))
        while leased_by(engine, owner) == 0 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        held_when_killed += leased_by(engine, owner)

    survivor = PipelineRunner(engine, [kill_pipeline()], clock=SystemClock(), owner="survivor")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        survivor.run_until_idle()
        with engine.connect() as conn:
            open_items = conn.execute(
                select(pipeline_items.c.id).where(pipeline_items.c.status != "done")
            ).all()
        if not open_items:
            break
        time.sleep(0.1)  # leases of the killed workers expire after a second

    assert open_items == []
    assert held_when_killed > 0  # the kills did land mid-item
    assert doubled(engine) == []
    for stage in ("toy.read", "toy.diff", "toy.assess"):
        assert len(effect_rows(engine, stage)) == ITEMS
    with engine.connect() as conn:
        expired = conn.execute(
            select(pipeline_trace.c.id).where(pipeline_trace.c.event == "lease_expired")
        ).all()
    assert len(expired) >= held_when_killed
    order = [row.sequence for row in effect_rows(engine, "toy.diff")]
    assert order == sorted(order)


def statuses(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(pipeline_items.c.status, pipeline_items.c.id))
        found: dict[str, int] = {}
        for status, _ in rows:
            found[status] = found.get(status, 0) + 1
        return found


def test_a_worker_restarted_after_sigkill_resumes_at_once_not_after_its_leases(
    engine: Engine, database_url: str
) -> None:
    """The leases are 120 s (300 s at the read stage), as intake's are: the restart must not wait them out."""
    create_effects(engine)
    for batch in range(1, 5):
        put(engine, "toy.read", partition="lender-1", sequence=batch, count=ITEMS // 4)
    put(engine, "toy.read", partition="lender-2", sequence=1, count=ITEMS // 4)
    doomed = spawn(database_url, "doomed", lease_seconds=120, name="node-worker")
    deadline = time.monotonic() + 30
    while leased_by(engine, "doomed") < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    held = leased_by(engine, "doomed")
    assert held > 0

    restarted_at = time.monotonic()
    successor = spawn(database_url, "successor", lease_seconds=120, name="node-worker")
    try:
        deadline = restarted_at + 60
        while statuses(engine) != {"done": ITEMS + ITEMS // 4} and time.monotonic() < deadline:
            time.sleep(0.05)
        took = time.monotonic() - restarted_at
    finally:
        successor.send_signal(signal.SIGKILL)
        successor.wait(10)

    assert statuses(engine) == {"done": ITEMS + ITEMS // 4}
    assert took < 15, f"took {took:.1f}s"  # the whole remaining work, far below one 120 s lease
    assert doubled(engine) == []
    with engine.connect() as conn:
        expired = conn.execute(
            select(pipeline_trace.c.detail).where(pipeline_trace.c.event == "lease_expired")
        ).scalars()
        assert list(expired) == ["lease of doomed"] * held
    order = [row.sequence for row in effect_rows(engine, "toy.diff") if row.partition == "lender-1"]
    assert order == sorted(order)
