"""Workers killed with SIGKILL mid-item: the items they held are taken over once their leases expire, and
every item is applied exactly once at every stage."""

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


def spawn(database_url: str, owner: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(WORKER), database_url, owner],
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
