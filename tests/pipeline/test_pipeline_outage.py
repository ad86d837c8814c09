"""Outages: a dependency down for hours spends no attempts and parks nothing (on a clock the test moves), while
an item that fails on its own is still parked; and the store itself going away (PostgreSQL restarted, SQLite
locked, connections failing) stops no loop of the runner."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pipeline_toys import Flaky, create_effects, doubled, effect_rows, later, put, recorder
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tranche.pipeline import (
    BreakerPolicy,
    Item,
    Pipeline,
    PipelineRunner,
    RetryableError,
    RetryPolicy,
    Stage,
    get_item,
    item_trace,
    overrides_from_env,
    stage_stats,
)
from tranche.pipeline.tables import pipeline_items, pipeline_trace
from tranche.shared.clock import ManualClock, SystemClock
from tranche.store.engine import create_store_engine
from tranche.store.migrate import upgrade
from tranche.testing.postgres import PostgresServer, ServerUnavailable

HOURS = 6


@pytest.fixture
def db(engine: Engine) -> Engine:
    create_effects(engine)
    return engine


def assess_stage(service: Any, **kwargs: Any) -> Stage:
    return Stage(
        "toy.assess",
        recorder(None),
        work=service,
        dependency="cashflow-service",
        retry=RetryPolicy(max_attempts=10, initial_delay=1.0, max_delay=30.0, jitter=0.0),
        lease_seconds=120.0,
        **kwargs,
    )


def by_status(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(pipeline_items.c.status, func.count()).group_by(pipeline_items.c.status))
        return dict(rows.tuples().all())


@pytest.mark.parametrize("max_attempts", ["2", "10"])
def test_an_outage_of_hours_spends_no_attempts_and_parks_nothing(db: Engine, max_attempts: str) -> None:
    clock = ManualClock()
    service = Flaky()
    service.down, service.down_error = True, RetryableError("503 from the cash-flow service")
    runner = PipelineRunner(
        db,
        [Pipeline("toy", [assess_stage(service)])],
        clock=clock,
        # As an operator sets it: TRANCHE_STAGE_INTAKE_ASSESS_MAX_ATTEMPTS=2 for the real stage.
        overrides=overrides_from_env({"TRANCHE_STAGE_TOY_ASSESS_MAX_ATTEMPTS": max_attempts}),
    )
    assert runner.stage("toy.assess").retry.max_attempts == int(max_attempts)
    ids = put(db, "toy.assess", count=40, clock=clock)

    runner.run_until_idle()
    assert runner.breaker_states() == {"toy.assess": "open"}
    opened_after = service.calls
    for _ in range(HOURS * 60):  # a minute at a time, past the longest cool-down: one probe each time
        later(clock, 61)
        runner.run_until_idle()
        assert by_status(db).get("parked", 0) == 0

    assert service.calls - opened_after >= HOURS * 60  # the breaker kept probing all along
    with db.connect() as conn:
        attempts = [get_item(conn, i).attempts for i in ids]
        probes = [e for i in ids for e in item_trace(conn, i) if e.event == "retry_scheduled"]
    assert sum(attempts) == 1  # the very first failure could have been the item's own; none after it
    assert all("attempt not counted" in p.detail for p in probes[1:] if p.detail)
    assert sum("attempt not counted" in (p.detail or "") for p in probes) == len(probes) - 1

    service.down = False  # the service is back: the next probe closes the breaker and the backlog drains
    later(clock, 61)
    runner.run_until_idle()
    assert by_status(db) == {"done": 40}
    assert doubled(db) == []


def test_a_lone_item_meeting_an_outage_is_not_parked_before_the_breaker_opens(db: Engine) -> None:
    clock = ManualClock()
    service = Flaky()
    service.down, service.down_error = True, RetryableError("connection refused")
    stage = assess_stage(service, breaker=BreakerPolicy(failure_threshold=5, cooldown=5.0, max_cooldown=60.0))
    runner = PipelineRunner(
        db,
        [Pipeline("toy", [stage])],
        clock=clock,
        overrides=overrides_from_env({"TRANCHE_STAGE_TOY_ASSESS_MAX_ATTEMPTS": "2"}),
    )
    (item_id,) = put(db, "toy.assess", clock=clock)

    for _ in range(500):  # retries one by one, the breaker opens after five, probes for hours after that
        runner.run_until_idle()
        later(clock, 31)
    assert service.calls > 100
    with db.connect() as conn:
        item = get_item(conn, item_id)
    assert (item.status, item.attempts) == ("retry_wait", 1)

    service.down = False
    later(clock, 61)
    runner.run_until_idle()
    with db.connect() as conn:
        assert get_item(conn, item_id).status == "done"


def test_an_item_that_fails_while_the_others_pass_is_still_parked(db: Engine) -> None:
    clock = ManualClock()
    poison: set[str] = set()

    def service(item: Item) -> str:
        if item.id in poison:
            raise RetryableError("500 for this loan only")
        return "ok"

    runner = PipelineRunner(
        db,
        [Pipeline("toy", [assess_stage(service, claim_batch=4)])],
        clock=clock,
        overrides=overrides_from_env({"TRANCHE_STAGE_TOY_ASSESS_MAX_ATTEMPTS": "2"}),
    )
    (bad,) = put(db, "toy.assess", clock=clock)
    poison.add(bad)
    for _ in range(5):
        put(db, "toy.assess", count=3, clock=clock)
        runner.run_until_idle()
        later(clock, 31)

    with db.connect() as conn:
        item = get_item(conn, bad)
    assert (item.status, item.attempts) == ("parked", 2)
    assert by_status(db) == {"done": 15, "parked": 1}
    assert runner.breaker_states() == {"toy.assess": "closed"}


# -- the store going away --------------------------------------------------------------------------------


class StoreOutage:
    """Makes every statement on an engine fail as a dropped connection does, while ``down`` is set."""

    def __init__(self, engine: Engine) -> None:
        self.down = threading.Event()
        self.refused = 0
        event.listen(engine, "before_cursor_execute", self._check)

    def _check(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.down.is_set():
            self.refused += 1
            raise OperationalError(
                statement, None, ConnectionError("server closed the connection unexpectedly")
            )


def slow_stages(lease_seconds: float = 120.0) -> list[Stage]:
    def slow(item: Item) -> None:
        time.sleep(0.01)

    return [
        Stage(
            "toy.a", recorder("toy.b"), work=slow, concurrency=2, claim_batch=4, lease_seconds=lease_seconds
        ),
        Stage("toy.b", recorder(None), work=slow, concurrency=2, claim_batch=4, lease_seconds=lease_seconds),
    ]


def wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def done(engine: Engine) -> int:
    return by_status(engine).get("done", 0)


def test_every_loop_waits_out_a_store_outage_and_hands_back_what_it_held(
    db: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    outage = StoreOutage(db)
    runner = PipelineRunner(
        db, [Pipeline("toy", slow_stages())], clock=SystemClock(), name="w1", heartbeat_seconds=0.2
    )
    put(db, "toy.a", count=120)
    with caplog.at_level(logging.INFO, logger="tranche.pipeline"):
        runner.start()
        try:
            assert wait_for(lambda: len(effect_rows(db)) >= 20, 30)
            outage.down.set()
            time.sleep(3)
            assert runner.status().store_available is False
            outage.down.clear()
            # Far sooner than the 120 s leases held when the store went away would have run out.
            assert wait_for(lambda: done(db) == 120, 30)
            assert runner.wait_idle(10)
        finally:
            runner.stop()
    assert outage.refused > 0
    assert len(effect_rows(db)) == 240
    assert doubled(db) == []
    assert runner.status().store_available is True
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert any(level == logging.WARNING and "cannot reach the store" in m for level, m in messages)
    assert any(level == logging.INFO and "reaches the store again" in m for level, m in messages)
    # Said once, not once per try of every loop.
    assert sum("cannot reach the store" in m for _, m in messages) == 1


def test_a_sqlite_store_locked_by_another_process_only_slows_the_workers(tmp_path: Any) -> None:
    path = tmp_path / "locked.db"
    engine = create_store_engine(f"sqlite:///{path}")
    upgrade(engine)
    create_effects(engine)
    runner = PipelineRunner(
        engine, [Pipeline("toy", slow_stages())], clock=SystemClock(), heartbeat_seconds=0.2
    )
    put(engine, "toy.a", count=40)
    runner.start()
    try:
        assert wait_for(lambda: len(effect_rows(engine)) >= 5, 30)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        time.sleep(2)
        other.execute("COMMIT")
        other.close()
        assert wait_for(lambda: done(engine) == 40, 30)
    finally:
        runner.stop()
        engine.dispose()
    assert doubled(engine) == []


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own, since the test restarts it."""
    try:
        server = PostgresServer().start()
    except ServerUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.postgres
@pytest.mark.slow
def test_workers_ride_out_a_postgresql_restart_and_finish_the_work(
    private_postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = private_postgres.create_database("outage")
    engine = create_store_engine(url)
    setup = create_store_engine(url, poolclass=NullPool)
    upgrade(setup)
    create_effects(setup)
    setup.dispose()
    runners = [
        PipelineRunner(
            engine, [Pipeline("toy", slow_stages())], clock=SystemClock(), name=n, heartbeat_seconds=0.2
        )
        for n in ("w1", "w2")
    ]
    put(engine, "toy.a", count=300)
    with caplog.at_level(logging.INFO, logger="tranche.pipeline"):
        for r in runners:
            r.start()
        try:
            assert wait_for(lambda: len(effect_rows(engine)) >= 50, 60)
            private_postgres.restart(down_seconds=2)
            assert wait_for(lambda: done(engine) == 300, 60)
            assert all(r.wait_idle(10) for r in runners)
        finally:
            for r in runners:
                r.stop()
    assert len(effect_rows(engine)) == 600
    assert doubled(engine) == []
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot reach the store" in m for m in messages)
    assert any("reaches the store again" in m for m in messages)
    with engine.connect() as conn:
        expired = conn.execute(
            select(func.count()).select_from(pipeline_trace).where(pipeline_trace.c.event == "lease_expired")
        ).scalar_one()
        stats = stage_stats(conn)
    assert expired == 0  # nothing waited for a lease to run out: what was held was handed back
    assert sum(s.done for s in stats) == 300
    engine.dispose()
