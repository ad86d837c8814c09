"""The threaded runner: per-stage workers, no head-of-line blocking, several runners on one store."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest
from pipeline_toys import create_effects, doubled, effect_rows, put, recorder
from sqlalchemy import Engine, func, select

from tranche.pipeline import (
    BreakerPolicy,
    Item,
    Pipeline,
    PipelineRunner,
    RetryableError,
    RetryPolicy,
    Stage,
)
from tranche.pipeline.tables import pipeline_items, pipeline_trace
from tranche.shared.clock import SystemClock

QUICK = RetryPolicy(max_attempts=50, initial_delay=0.01, multiplier=2.0, max_delay=0.1, jitter=0.5)


@pytest.fixture
def db(engine: Engine) -> Engine:
    create_effects(engine)
    return engine


def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def done_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(pipeline_items).where(pipeline_items.c.status == "done")
            ).scalar_one()
        )


def test_a_stage_whose_dependency_hangs_does_not_hold_up_the_stage_before_it(db: Engine) -> None:
    gate = threading.Event()

    def hangs(item: Item) -> None:
        gate.wait(60)

    stages = [
        Stage("toy.diff", recorder("toy.assess"), claim_batch=4),
        Stage("toy.assess", recorder(None), work=hangs, dependency="svc", concurrency=2, claim_batch=1),
    ]
    runner = PipelineRunner(db, [Pipeline("toy", stages)], clock=SystemClock())
    runner.start()
    try:
        put(db, "toy.diff", count=40)
        runner.notify()
        assert eventually(lambda: len(effect_rows(db, "toy.diff")) == 40)
        assert effect_rows(db, "toy.assess") == []
        gate.set()
        assert runner.wait_idle(30)
    finally:
        gate.set()
        runner.stop()
    assert len(effect_rows(db, "toy.assess")) == 40
    assert doubled(db) == []


def test_while_a_dependency_is_down_the_stage_before_it_keeps_flowing_and_the_backlog_drains_after(
    db: Engine,
) -> None:
    down = threading.Event()
    down.set()
    calls = []

    def service(item: Item) -> None:
        calls.append(down.is_set())
        if down.is_set():
            raise RetryableError("connection refused")

    stages = [
        Stage("toy.diff", recorder("toy.assess")),
        Stage(
            "toy.assess",
            recorder(None),
            work=service,
            dependency="svc",
            retry=QUICK,
            breaker=BreakerPolicy(failure_threshold=3, cooldown=0.2, max_cooldown=0.4),
        ),
    ]
    runner = PipelineRunner(db, [Pipeline("toy", stages)], clock=SystemClock())
    runner.start()
    try:
        put(db, "toy.diff", count=5)
        runner.notify()
        assert eventually(lambda: runner.breaker_states()["toy.assess"] != "closed")
        calls_when_opened, opened_at = len(calls), time.monotonic()
        put(db, "toy.diff", count=25)  # new work arrives while the service is down
        runner.notify()
        assert eventually(lambda: len(effect_rows(db, "toy.diff")) == 30)
        time.sleep(0.5)
        # While down only probes reach the service, at most one per cool-down (0.2 s at least).
        probes = len(calls) - calls_when_opened
        assert probes <= 1 + (time.monotonic() - opened_at) / 0.2
        assert probes < 25
        down.clear()
        assert eventually(lambda: done_count(db) == 30)
    finally:
        runner.stop()
    assert len(effect_rows(db, "toy.assess")) == 30
    assert doubled(db) == []
    with db.connect() as conn:
        spent = conn.execute(select(func.sum(pipeline_items.c.attempts))).scalar_one()
    # Every success spent its attempt; of the failures only the first could have been an item's own: the
    # ones after it, and the probes while the breaker was open, said the service was down.
    assert spent == calls.count(False) + 1


def test_two_runners_with_several_workers_apply_every_item_exactly_once(db: Engine) -> None:
    rng = random.Random(7)
    lock = threading.Lock()

    def unreliable(item: Item) -> None:
        with lock:
            fail = rng.random() < 0.2
        if fail:
            raise RetryableError("503", retry_after=0.01, dependency_down=False)

    stages = [
        Stage("toy.a", recorder("toy.b"), concurrency=2, claim_batch=4),
        Stage("toy.b", recorder("toy.c"), work=unreliable, retry=QUICK, concurrency=3, claim_batch=2),
        Stage("toy.c", recorder(None), concurrency=2),
    ]
    runners = [
        PipelineRunner(db, [Pipeline("toy", stages)], clock=SystemClock(), owner=o) for o in ("r1", "r2")
    ]
    for r in runners:
        r.start()
    try:
        put(db, "toy.a", count=60)
        for r in runners:
            r.notify()
        assert eventually(lambda: done_count(db) == 60, timeout=60)
        assert all(r.wait_idle(10) for r in runners)
    finally:
        for r in runners:
            r.stop()
    rows = effect_rows(db)
    assert len(rows) == 180
    assert doubled(db) == []
    assert sum(r.processed for r in runners) >= 180


def test_a_running_worker_renews_its_leases_so_slow_work_is_not_taken_over(db: Engine) -> None:
    def slow(item: Item) -> None:
        time.sleep(0.8)

    stage = Stage("toy.assess", recorder(None), work=slow, lease_seconds=0.3, claim_batch=2)
    busy = PipelineRunner(db, [Pipeline("toy", [stage])], clock=SystemClock(), owner="busy")
    rival = PipelineRunner(db, [Pipeline("toy", [stage])], clock=SystemClock(), owner="rival")
    put(db, "toy.assess", count=2)
    busy.start()
    try:
        assert eventually(lambda: leased_count(db) == 2)
        rival_took = 0
        while leased_count(db):  # the rival keeps looking for expired leases while the slow work runs
            rival_took += rival.run_until_idle()
            time.sleep(0.05)
    finally:
        busy.stop()
    assert rival_took == 0
    assert busy.lost_leases == 0
    assert len(effect_rows(db)) == 2
    with db.connect() as conn:
        expired = conn.execute(
            select(func.count()).select_from(pipeline_trace).where(pipeline_trace.c.event == "lease_expired")
        )
        assert expired.scalar_one() == 0


def leased_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(pipeline_items).where(pipeline_items.c.status == "leased")
            ).scalar_one()
        )
