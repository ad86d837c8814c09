"""Routing by key: any worker serves any partition, ordered stages keep each partition's order whichever worker
claims, pins change at run time and never strand a partition, and a gone worker's leases are handed back at
once (by heartbeat, or by pid on the same node)."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from pipeline_toys import create_effects, doubled, effect_rows, later, put, recorder
from sqlalchemy import Engine, func, select

from tranche.pipeline import (
    Item,
    NewItem,
    Next,
    Pipeline,
    PipelineRunner,
    Stage,
    list_pins,
    list_workers,
    pin,
    unpin,
)
from tranche.pipeline import store as pipeline_store
from tranche.pipeline import workers as pipeline_workers
from tranche.pipeline.tables import pipeline_items, pipeline_trace
from tranche.shared.clock import ManualClock, SystemClock

TIMEOUT = timedelta(seconds=15)


@pytest.fixture
def db(engine: Engine) -> Engine:
    create_effects(engine)
    return engine


def toy(*stages: Stage) -> Pipeline:
    return Pipeline("toy", stages or [Stage("toy.b", recorder(None), lease_seconds=120.0)])


def statuses(engine: Engine, ids: list[str]) -> list[str]:
    with engine.connect() as conn:
        found = dict(
            conn.execute(
                select(pipeline_items.c.id, pipeline_items.c.status).where(pipeline_items.c.id.in_(ids))
            )
            .tuples()
            .all()
        )
    return [found[i] for i in ids]


def register_elsewhere(engine: Engine, clock: ManualClock, worker_id: str, name: str) -> None:
    """A worker on another node, beating now."""
    with engine.begin() as conn:
        pipeline_workers.register(
            conn,
            worker_id=worker_id,
            name=name,
            node=pipeline_workers.Node("far-host", "far-boot", "pid:[1]"),
            pid=4242,
            started="1",
            now=clock.now(),
        )


def claim_as(engine: Engine, owner: str, clock: ManualClock, pipeline: Pipeline, limit: int = 10) -> int:
    """Lease items as ``owner`` would, and leave them leased (as a worker killed mid-item does)."""
    with engine.begin() as conn:
        return len(
            pipeline_store.claim(
                conn, pipeline, pipeline.stages[0], owner=owner, now=clock.now(), limit=limit
            )
        )


def test_any_worker_serves_every_partition_without_configuration(db: Engine) -> None:
    clock = ManualClock()
    ids = [i for lender in ("acme", "bolt", "crane") for i in put(db, "toy.b", partition=lender, count=2)]

    PipelineRunner(db, [toy()], clock=clock, name="w1").run_until_idle()

    assert statuses(db, ids) == ["done"] * 6


def test_a_partition_pinned_to_another_live_worker_is_left_to_it(db: Engine) -> None:
    clock = ManualClock()
    register_elsewhere(db, clock, "w2-1", "w2")
    with db.begin() as conn:
        pin(conn, "acme", "w2", now=clock.now())
        pin(conn, "bolt", "w1", now=clock.now())
    theirs = put(db, "toy.b", partition="acme", count=2)
    mine = put(db, "toy.b", partition="bolt") + put(db, "toy.b", partition="crane")

    w1 = PipelineRunner(db, [toy()], clock=clock, name="w1")
    w1.run_until_idle()

    assert statuses(db, mine) == ["done", "done"]
    assert statuses(db, theirs) == ["ready", "ready"]
    assert w1.excluded == frozenset({"acme"})
    w2 = PipelineRunner(db, [toy()], clock=clock, name="w2")
    w2.run_until_idle()
    assert statuses(db, theirs) == ["done", "done"]


def test_a_pin_to_a_worker_that_is_not_running_strands_nothing_and_says_so(
    db: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    register_elsewhere(db, clock, "w2-1", "w2")
    with db.begin() as conn:
        pin(conn, "acme", "ghost", now=clock.now())  # no worker of that name ever ran
        pin(conn, "bolt", "w2", now=clock.now())
    ghost = put(db, "toy.b", partition="acme")
    w2s = put(db, "toy.b", partition="bolt")
    w1 = PipelineRunner(db, [toy()], clock=clock, name="w1")

    with caplog.at_level(logging.INFO, logger="tranche.pipeline"):
        w1.run_until_idle()
        assert statuses(db, ghost + w2s) == ["done", "ready"]
        later(clock, 16)  # w2 stops beating: its pin is no longer obeyed either
        w1.run_until_idle()

    assert statuses(db, w2s) == ["done"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("partition acme is pinned to worker ghost, which is not running" in m for m in warnings)
    assert any("partition bolt is pinned to worker w2, which is not running" in m for m in warnings)
    with db.connect() as conn:
        assert [(p.partition, p.obeyed) for p in list_pins(conn, now=clock.now(), timeout=TIMEOUT)] == [
            ("acme", False),
            ("bolt", False),
        ]


def test_a_pin_changed_at_run_time_takes_effect_within_a_heartbeat_without_a_restart(db: Engine) -> None:
    clock = SystemClock()
    stage = Stage("toy.b", recorder(None))
    w1 = PipelineRunner(db, [toy(stage)], clock=clock, name="w1", heartbeat_seconds=0.1, worker_timeout=30)
    with db.begin() as conn:
        pipeline_workers.register(
            conn,
            worker_id="w2-1",
            name="w2",
            node=pipeline_workers.Node("far-host", "far-boot", "pid:[1]"),
            pid=4242,
            started="1",
            now=clock.now(),
        )
    w1.start()
    try:
        with db.begin() as conn:
            pin(conn, "acme", "w2", now=clock.now())
        time.sleep(0.5)
        assert w1.excluded == frozenset({"acme"})
        held = put(db, "toy.b", partition="acme", count=3)
        w1.notify()
        time.sleep(0.5)
        assert statuses(db, held) == ["ready"] * 3  # left to w2

        with db.begin() as conn:
            unpin(conn, "acme")
        started = time.monotonic()
        while statuses(db, held) != ["done"] * 3 and time.monotonic() - started < 5:
            time.sleep(0.02)
        took = time.monotonic() - started
    finally:
        w1.stop()
    assert statuses(db, held) == ["done"] * 3
    assert took < 2.0


def test_ordered_stages_keep_each_partitions_order_across_workers_and_moving_pins(db: Engine) -> None:
    """Two workers of different names, several threads each, claim the same partitions while pins move them
    from one worker to the other; each partition's batches still pass the ordered stage in sequence order."""
    rng = random.Random(3)
    lock = threading.Lock()

    def jitter(item: Item) -> None:
        with lock:
            pause = rng.uniform(0, 0.01)
        time.sleep(pause)

    def fan_out(conn: Any, item: Item, result: Any) -> Next:
        children = tuple(
            NewItem("toy.diff", {"n": n}, partition=item.partition, sequence=item.sequence) for n in range(2)
        )
        return Next(None, children=children)

    stages = [
        Stage("toy.read", fan_out, work=jitter, concurrency=2, claim_batch=2),
        Stage("toy.diff", recorder(None), work=jitter, ordered=True, concurrency=3, claim_batch=1),
    ]
    runners = [
        PipelineRunner(db, [Pipeline("toy", stages)], clock=SystemClock(), name=name, heartbeat_seconds=0.2)
        for name in ("w1", "w2")
    ]
    lenders = [f"lender-{n}" for n in range(4)]
    for r in runners:
        r.start()
    moving = threading.Event()

    def move_pins() -> None:
        # Pins move between the workers (and away) while the work runs: the order must not care.
        choices = random.Random(5)
        while not moving.wait(0.05):
            with db.begin() as conn:
                lender = choices.choice(lenders)
                target = choices.choice(["w1", "w2", None])
                if target is None:
                    unpin(conn, lender)
                else:
                    pin(conn, lender, target, now=SystemClock().now())

    mover = threading.Thread(target=move_pins)
    mover.start()
    try:
        for sequence in range(1, 7):
            for lender in lenders:
                put(db, "toy.read", partition=lender, sequence=sequence)
        for r in runners:
            r.notify()
        deadline = time.monotonic() + 60
        while len(effect_rows(db, "toy.diff")) < 48 and time.monotonic() < deadline:
            time.sleep(0.05)
        moving.set()
        mover.join()
        assert all(r.wait_idle(10) for r in runners)
    finally:
        moving.set()
        for r in runners:
            r.stop()
    rows = effect_rows(db, "toy.diff")
    assert len(rows) == 48
    assert doubled(db) == []
    for lender in lenders:
        order = [row.sequence for row in rows if row.partition == lender]
        assert order == sorted(order), lender
    # Both workers did ordered work: the order held across them, not because one worker did it all.
    assert all(r.outcomes[("toy.diff", "succeeded")] > 0 for r in runners)


def test_a_worker_whose_heartbeat_stopped_has_its_leases_handed_back(db: Engine) -> None:
    clock = ManualClock()
    pipeline = toy()
    register_elsewhere(db, clock, "far-1", "far")
    ids = put(db, "toy.b", count=3)
    assert claim_as(db, "far-1", clock, pipeline) == 3
    here = PipelineRunner(db, [pipeline], clock=clock, name="here")

    later(clock, 10)  # still beating as far as anyone can tell: its live leases are respected
    assert here.run_until_idle() == 0
    assert statuses(db, ids) == ["leased"] * 3

    later(clock, 6)  # 16 s without a heartbeat: gone, long before its 120 s leases would run out
    assert here.run_until_idle() == 3

    assert statuses(db, ids) == ["done"] * 3
    with db.connect() as conn:
        expired = conn.execute(
            select(pipeline_trace.c.detail).where(pipeline_trace.c.event == "lease_expired")
        ).scalars()
        assert list(expired) == ["lease of far-1"] * 3
        assert [w.id for w in list_workers(conn, now=clock.now(), timeout=TIMEOUT)] == []


def test_a_restart_on_the_same_node_takes_its_dead_predecessors_leases_at_once(db: Engine) -> None:
    clock = ManualClock()
    pipeline = toy()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(finished.stdout)
    node = pipeline_workers.this_node()
    with db.begin() as conn:
        # A predecessor whose process is gone, and one whose pid the kernel has since given to this process.
        pipeline_workers.register(
            conn, worker_id="dead-1", name="w1", node=node, pid=dead_pid, started="1", now=clock.now()
        )
        pipeline_workers.register(
            conn, worker_id="dead-2", name="w1", node=node, pid=os.getpid(), started="1", now=clock.now()
        )
    ids = put(db, "toy.b", count=4)
    assert claim_as(db, "dead-1", clock, pipeline, limit=2) == 2
    assert claim_as(db, "dead-2", clock, pipeline, limit=2) == 2

    # No time passes: the heartbeats are fresh, but the processes behind them are gone.
    assert PipelineRunner(db, [pipeline], clock=clock, name="w1").run_until_idle() == 4
    assert statuses(db, ids) == ["done"] * 4


def test_a_live_runner_in_this_process_is_not_mistaken_for_a_dead_one(db: Engine) -> None:
    clock = ManualClock()
    pipeline = toy()
    sibling = PipelineRunner(db, [pipeline], clock=clock, name="w1", owner="sibling")
    sibling.refresh()  # registered from this very process, as a second runner in tests is
    ids = put(db, "toy.b", count=2)
    assert claim_as(db, "sibling", clock, pipeline) == 2

    assert PipelineRunner(db, [pipeline], clock=clock, name="w1").run_until_idle() == 0
    assert statuses(db, ids) == ["leased", "leased"]
    with db.connect() as conn:
        (registered,) = list_workers(conn, now=clock.now(), timeout=TIMEOUT)
    assert (registered.id, registered.alive, registered.leases) == ("sibling", True, 2)


def test_a_stopped_runner_deregisters(db: Engine) -> None:
    runner = PipelineRunner(db, [toy()], clock=SystemClock(), name="w1", heartbeat_seconds=0.1)
    runner.start()
    with db.connect() as conn:
        assert [w.name for w in list_workers(conn, now=SystemClock().now(), timeout=TIMEOUT)] == ["w1"]
    runner.stop()
    with db.connect() as conn:
        count = conn.execute(select(func.count()).select_from(pipeline_workers.pipeline_workers)).scalar_one()
    assert count == 0


def test_a_worker_name_must_be_an_identifier() -> None:
    from tranche.shared.errors import ValidationError

    with pytest.raises(ValidationError) as raised:
        PipelineRunner(None, [toy()], clock=SystemClock(), name="../etc")  # type: ignore[arg-type]
    assert raised.value.field == "TRANCHE_WORKER_NAME"
