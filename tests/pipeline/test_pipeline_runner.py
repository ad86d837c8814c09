"""The runner against the real store (SQLite and PostgreSQL), single-threaded with a manual clock."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pipeline_toys import Flaky, create_effects, doubled, effect_rows, later, put, record, recorder
from sqlalchemy import Connection, Engine, insert

from tranche.pipeline import (
    BreakerPolicy,
    Item,
    ItemNotFoundError,
    ItemNotParkedError,
    NewItem,
    Next,
    Pipeline,
    PipelineRunner,
    RetryableError,
    RetryPolicy,
    Stage,
    StageOverride,
    TerminalError,
    get_item,
    item_trace,
    items_by_trace_key,
    retry_parked,
    stage_stats,
)
from tranche.shared.clock import ManualClock

FAST = RetryPolicy(max_attempts=4, initial_delay=1.0, multiplier=2.0, max_delay=30.0, jitter=0.0)


@pytest.fixture
def db(engine: Engine) -> Engine:
    create_effects(engine)
    return engine


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def runner(engine: Engine, clock: ManualClock, *stages: Stage, **kwargs: Any) -> PipelineRunner:
    return PipelineRunner(engine, [Pipeline("toy", stages)], clock=clock, **kwargs)


def events(engine: Engine, item_id: str) -> list[tuple[str, str, int]]:
    with engine.connect() as conn:
        return [(t.stage, t.event, t.attempt) for t in item_trace(conn, item_id)]


def item(engine: Engine, item_id: str) -> Any:
    with engine.connect() as conn:
        return get_item(conn, item_id)


def test_an_item_moves_through_every_stage_and_each_commit_applies_once(
    db: Engine, clock: ManualClock
) -> None:
    r = runner(
        db,
        clock,
        Stage("toy.a", recorder("toy.b")),
        Stage("toy.b", recorder("toy.c")),
        Stage("toy.c", recorder(None)),
    )
    ids = put(db, "toy.a", count=5)

    assert r.run_until_idle() == 15

    assert sorted((row.item_id, row.stage) for row in effect_rows(db)) == sorted(
        (i, s) for i in ids for s in ("toy.a", "toy.b", "toy.c")
    )
    assert all(item(db, i).status == "done" for i in ids)
    assert r.run_until_idle() == 0


def test_the_trace_has_one_row_per_transition(db: Engine, clock: ManualClock) -> None:
    r = runner(db, clock, Stage("toy.a", recorder("toy.b")), Stage("toy.b", recorder(None)))
    (item_id,) = put(db, "toy.a")
    r.run_until_idle()

    assert events(db, item_id) == [
        ("toy.a", "enqueued", 0),
        ("toy.a", "claimed", 1),
        ("toy.a", "succeeded", 1),
        ("toy.b", "claimed", 1),
        ("toy.b", "succeeded", 1),
    ]


def test_a_commit_can_replace_the_payload_and_fan_out_children(db: Engine, clock: ManualClock) -> None:
    def split(conn: Connection, item: Item, _: Any) -> Next:
        children = tuple(
            NewItem(
                "toy.slice",
                {"slice": n},
                partition=item.partition,
                sequence=item.sequence,
                trace_key="batch-1",
            )
            for n in range(3)
        )
        return Next(None, payload={"split": 3}, children=children)

    seen: list[dict[str, Any]] = []

    def keep(conn: Connection, item: Item, _: Any) -> Next:
        seen.append(item.payload)
        record(conn, item)
        return Next(None)

    r = runner(db, clock, Stage("toy.read", split), Stage("toy.slice", keep))
    (parent,) = put(db, "toy.read", trace_key="batch-1")
    r.run_until_idle()

    assert item(db, parent).payload == {"split": 3}
    assert sorted(p["slice"] for p in seen) == [0, 1, 2]
    with db.connect() as conn:
        batch = items_by_trace_key(conn, "batch-1")
    assert len(batch) == 4
    assert {i.parent_id for i in batch if i.id != parent} == {parent}
    assert all(i.status == "done" for i in batch)


def test_a_retryable_failure_resumes_at_the_failed_stage_and_earlier_stages_are_not_redone(
    db: Engine, clock: ManualClock
) -> None:
    flaky = Flaky([RetryableError("503"), RetryableError("503")])
    r = runner(
        db, clock, Stage("toy.a", recorder("toy.b")), Stage("toy.b", recorder(None), work=flaky, retry=FAST)
    )
    (item_id,) = put(db, "toy.a")

    r.run_until_idle()
    assert item(db, item_id).status == "retry_wait"
    later(clock, 1.0)
    r.run_until_idle()
    later(clock, 2.0)
    r.run_until_idle()

    assert item(db, item_id).status == "done"
    assert len(effect_rows(db, "toy.a")) == 1
    assert len(effect_rows(db, "toy.b")) == 1
    assert flaky.calls == 3
    assert [e for e in events(db, item_id) if e[1] != "enqueued"] == [
        ("toy.a", "claimed", 1),
        ("toy.a", "succeeded", 1),
        ("toy.b", "claimed", 1),
        ("toy.b", "retry_scheduled", 1),
        ("toy.b", "claimed", 2),
        ("toy.b", "retry_scheduled", 2),
        ("toy.b", "claimed", 3),
        ("toy.b", "succeeded", 3),
    ]


def test_a_retry_waits_for_its_backoff_and_honours_retry_after(db: Engine, clock: ManualClock) -> None:
    flaky = Flaky([RetryableError("429", retry_after=7.0), RetryableError("503")])
    r = runner(db, clock, Stage("toy.b", recorder(None), work=flaky, retry=FAST))
    (item_id,) = put(db, "toy.b")

    assert r.run_until_idle() == 1
    later(clock, 6.9)
    assert r.run_until_idle() == 0  # Retry-After 7 s: not due yet
    later(clock, 0.2)
    assert r.run_until_idle() == 1  # second failure: backoff 1 s * 2**1 = 2 s
    later(clock, 1.9)
    assert r.run_until_idle() == 0
    later(clock, 0.2)
    assert r.run_until_idle() == 1
    assert item(db, item_id).status == "done"


def test_a_retry_frees_the_worker_for_other_items_at_once(db: Engine, clock: ManualClock) -> None:
    flaky = Flaky([RetryableError("503", retry_after=60)])
    r = runner(db, clock, Stage("toy.b", recorder(None), work=flaky, retry=FAST, claim_batch=1))
    first, *others = put(db, "toy.b", count=4)

    r.run_until_idle()

    assert item(db, first).status == "retry_wait"
    assert [item(db, i).status for i in others] == ["done"] * 3


def test_an_item_is_parked_after_max_attempts_and_an_operator_can_requeue_it(
    db: Engine, clock: ManualClock
) -> None:
    flaky = Flaky([RetryableError("503")] * 4)
    r = runner(db, clock, Stage("toy.b", recorder(None), work=flaky, retry=FAST))
    (item_id,) = put(db, "toy.b")

    for _ in range(6):
        r.run_until_idle()
        later(clock, 30)
    parked = item(db, item_id)
    assert parked.status == "parked"
    assert parked.attempts == 4
    assert "503" in (parked.last_error or "")
    assert flaky.calls == 4

    with db.begin() as conn:
        requeued = retry_parked(conn, item_id, now=clock.now())
    assert (requeued.status, requeued.attempts) == ("ready", 0)
    r.run_until_idle()

    assert item(db, item_id).status == "done"
    assert [e[1] for e in events(db, item_id)][-4:] == ["parked", "requeued", "claimed", "succeeded"]


def test_requeuing_refuses_an_item_that_is_not_parked_or_does_not_exist(
    db: Engine, clock: ManualClock
) -> None:
    (item_id,) = put(db, "toy.b")
    with pytest.raises(ItemNotParkedError) as raised, db.begin() as conn:
        retry_parked(conn, item_id)
    assert raised.value.record == item_id
    with pytest.raises(ItemNotFoundError), db.begin() as conn:
        retry_parked(conn, "itm_nothing")
    with pytest.raises(ItemNotFoundError), db.connect() as conn:
        item_trace(conn, "itm_nothing")


def test_a_terminal_error_fails_the_item_with_its_reason_and_its_neighbours_go_on(
    db: Engine, clock: ManualClock
) -> None:
    flaky = Flaky([TerminalError("400: interest_rate must not be negative")])
    r = runner(db, clock, Stage("toy.b", recorder(None), work=flaky, retry=FAST, claim_batch=1))
    bad, *good = put(db, "toy.b", count=3)

    r.run_until_idle()

    failed = item(db, bad)
    assert failed.status == "failed"
    assert failed.last_error == "400: interest_rate must not be negative"
    assert events(db, bad)[-1] == ("toy.b", "failed", 1)
    assert [item(db, i).status for i in good] == ["done", "done"]


def test_an_unexpected_exception_is_retried_and_keeps_a_traceback_summary(
    db: Engine, clock: ManualClock
) -> None:
    flaky = Flaky([KeyError("borrower")])
    r = runner(db, clock, Stage("toy.b", recorder(None), work=flaky, retry=FAST))
    (item_id,) = put(db, "toy.b")

    r.run_until_idle()

    waiting = item(db, item_id)
    assert waiting.status == "retry_wait"
    assert waiting.last_error is not None
    assert waiting.last_error.startswith("KeyError: 'borrower'")
    assert "Traceback" in waiting.last_error
    later(clock, 1.0)
    r.run_until_idle()
    assert item(db, item_id).status == "done"


def test_an_exception_in_commit_rolls_back_the_commits_writes(db: Engine, clock: ManualClock) -> None:
    calls = []

    def half_done(conn: Connection, item: Item, _: Any) -> Next:
        record(conn, item, "half")
        calls.append(item.attempt)
        if item.attempt == 1:
            raise RetryableError("lost the connection to the archive")
        return Next(None)

    r = runner(db, clock, Stage("toy.b", half_done, retry=FAST))
    (item_id,) = put(db, "toy.b")
    r.run_until_idle()
    assert effect_rows(db) == []
    later(clock, 1.0)
    r.run_until_idle()

    assert calls == [1, 2]
    assert len(effect_rows(db)) == 1
    assert item(db, item_id).status == "done"


def test_a_zombie_whose_lease_was_taken_over_cannot_commit(db: Engine, clock: ManualClock) -> None:
    entered, gate = threading.Event(), threading.Event()
    first_call = [True]

    def slow_once(item: Item) -> str:
        if first_call[0]:
            first_call[0] = False
            entered.set()
            gate.wait(30)
        return "result"

    stage = Stage("toy.b", recorder(None), work=slow_once, lease_seconds=5.0)
    zombie = runner(db, clock, stage, owner="zombie")
    rescuer = runner(db, clock, stage, owner="rescuer")
    (item_id,) = put(db, "toy.b")

    thread = threading.Thread(target=zombie.run_until_idle)
    thread.start()
    assert entered.wait(10)
    later(clock, 6.0)  # the zombie's lease expires while its work is still running
    assert rescuer.run_until_idle() == 1
    gate.set()
    thread.join(10)

    assert zombie.lost_leases == 1
    assert len(effect_rows(db)) == 1
    assert item(db, item_id).status == "done"
    trail = events(db, item_id)
    assert ("toy.b", "lease_expired", 1) in trail
    assert trail[-1] == ("toy.b", "succeeded", 2)


def test_an_item_that_keeps_losing_its_lease_is_parked(db: Engine, clock: ManualClock) -> None:
    stage = Stage("toy.b", recorder(None), lease_seconds=1.0, retry=FAST)
    (item_id,) = put(db, "toy.b")
    pipeline = Pipeline("toy", [stage])
    from tranche.pipeline.store import claim

    for n in range(FAST.max_attempts):
        with db.begin() as conn:  # a worker that claims and dies
            assert len(claim(conn, pipeline, stage, owner=f"dead-{n}", now=clock.now(), limit=1)) == 1
        later(clock, 2.0)
    runner(db, clock, stage).run_until_idle()

    assert item(db, item_id).status == "parked"
    assert effect_rows(db) == []


def test_the_breaker_opens_and_no_attempt_is_spent_while_it_is_open(db: Engine, clock: ManualClock) -> None:
    service = Flaky()
    service.down, service.down_error = True, RetryableError("connection refused")
    breaker = BreakerPolicy(failure_threshold=3, cooldown=10.0)
    r = runner(
        db,
        clock,
        Stage(
            "toy.assess",
            recorder(None),
            work=service,
            dependency="svc",
            breaker=breaker,
            retry=FAST,
            claim_batch=8,
        ),
    )
    ids = put(db, "toy.assess", count=10)

    r.run_until_idle()
    assert r.breaker_states() == {"toy.assess": "open"}
    assert service.calls == 3
    for _ in range(3):  # retries come due, but the breaker is open: nothing is claimed
        later(clock, 2.0)
        assert r.run_until_idle() == 0
    assert service.calls == 3
    # Only the first failure may be an item's own: the two that followed it said the service was down.
    assert sum(item(db, i).attempts for i in ids) == 1
    released = [i for i in ids if events(db, i)[-1][1] == "released"]
    assert len(released) == 5  # claimed with the first three, handed back when the breaker opened

    service.down = False
    later(clock, 5.0)  # past the cool-down: one probe, it succeeds, the breaker closes, the backlog drains
    r.run_until_idle()

    assert r.breaker_states() == {"toy.assess": "closed"}
    assert service.calls == 3 + 10
    assert all(item(db, i).status == "done" for i in ids)
    assert doubled(db) == []


def test_a_failed_probe_opens_the_breaker_again(db: Engine, clock: ManualClock) -> None:
    service = Flaky()
    service.down, service.down_error = True, RetryableError("503")
    breaker = BreakerPolicy(failure_threshold=2, cooldown=10.0)
    r = runner(
        db,
        clock,
        Stage("toy.assess", recorder(None), work=service, dependency="svc", breaker=breaker, retry=FAST),
    )
    put(db, "toy.assess", count=4)

    r.run_until_idle()
    assert service.calls == 2
    later(clock, 10.0)
    r.run_until_idle()

    assert service.calls == 3  # exactly one probe
    assert r.breaker_states() == {"toy.assess": "open"}
    later(clock, 10.0)  # the cool-down doubled after the failed probe
    assert r.run_until_idle() == 0


def test_overrides_replace_what_the_stage_declares(db: Engine, clock: ManualClock) -> None:
    flaky = Flaky([RetryableError("503")] * 5)
    stage = Stage("toy.assess", recorder(None), work=flaky, retry=FAST, concurrency=1)
    r = runner(
        db,
        clock,
        stage,
        overrides={"TOY_ASSESS": StageOverride(concurrency=4, max_attempts=2, lease_seconds=9.0)},
    )
    assert (r.stage("toy.assess").concurrency, r.stage("toy.assess").lease_seconds) == (4, 9.0)
    (item_id,) = put(db, "toy.assess")

    r.run_until_idle()
    later(clock, 1.0)
    r.run_until_idle()

    assert item(db, item_id).status == "parked"
    assert flaky.calls == 2


def test_stage_stats_count_items_by_status_with_breaker_and_rate(db: Engine, clock: ManualClock) -> None:
    service = Flaky([TerminalError("400")])
    breaker = BreakerPolicy(failure_threshold=1, cooldown=60.0)
    stages = (
        Stage("toy.a", recorder("toy.b")),
        Stage(
            "toy.b",
            recorder(None),
            work=service,
            dependency="svc",
            breaker=breaker,
            retry=FAST,
            claim_batch=1,
        ),
    )
    r = runner(db, clock, *stages)
    put(db, "toy.a", count=3, clock=clock)
    r.run_until_idle()  # one fails terminally, two finish
    service.down, service.down_error = True, RetryableError("503")
    put(db, "toy.a", count=2, clock=clock)
    r.run_until_idle()  # one fails and opens the breaker, the other waits

    with db.connect() as conn:
        stats = {
            s.stage: s
            for s in stage_stats(
                conn, now=clock.now(), pipelines=[Pipeline("toy", stages)], breakers=r.breaker_states()
            )
        }
    a, b = stats["toy.a"], stats["toy.b"]
    assert (a.ready, a.in_flight, a.retry_wait, a.done, a.completed_last_minute) == (0, 0, 0, 0, 5)
    assert (b.ready, b.retry_wait, b.failed, b.done, b.breaker) == (1, 1, 1, 2, "open")
    assert b.completed_last_minute == 2
    assert a.breaker is None
    later(clock, 61)
    with db.connect() as conn:
        assert all(s.completed_last_minute == 0 for s in stage_stats(conn, now=clock.now()))


def test_a_stage_may_send_an_item_only_to_a_stage_of_its_pipeline(db: Engine, clock: ManualClock) -> None:
    r = runner(db, clock, Stage("toy.a", recorder("toy.nowhere"), retry=FAST))
    (item_id,) = put(db, "toy.a")
    r.run_until_idle()

    stuck = item(db, item_id)
    assert stuck.status == "retry_wait"
    assert "toy.nowhere" in (stuck.last_error or "")
    assert effect_rows(db) == []


def test_enqueue_runs_in_the_callers_transaction(db: Engine, clock: ManualClock) -> None:
    from tranche.pipeline import enqueue

    with pytest.raises(RuntimeError), db.begin() as conn:
        enqueue(conn, "toy", NewItem("toy.b", {}, partition="p", sequence=1, trace_key="gone"))
        conn.execute(
            insert(__import__("pipeline_toys").effects).values(
                item_id="x", stage="s", partition="p", sequence=1
            )
        )
        raise RuntimeError("the caller changed its mind")
    with db.connect() as conn:
        assert items_by_trace_key(conn, "gone") == []
    assert effect_rows(db) == []


def test_a_zombie_cannot_commit_while_another_worker_holds_the_item(db: Engine, clock: ManualClock) -> None:
    from tranche.pipeline.store import claim

    entered, gate = threading.Event(), threading.Event()

    def slow(item: Item) -> str:
        entered.set()
        gate.wait(30)
        return "result"

    stage = Stage("toy.b", recorder(None), work=slow, lease_seconds=5.0)
    zombie = runner(db, clock, stage, owner="zombie")
    (item_id,) = put(db, "toy.b")

    thread = threading.Thread(target=zombie.run_until_idle)
    thread.start()
    assert entered.wait(10)
    later(clock, 6.0)
    with db.begin() as conn:  # another worker takes the expired lease over and is still busy with it
        (taken,) = claim(conn, Pipeline("toy", [stage]), stage, owner="other", now=clock.now(), limit=1)
    gate.set()
    thread.join(10)

    assert zombie.lost_leases == 1
    assert effect_rows(db) == []
    current = item(db, item_id)
    assert (current.status, current.lease_owner, current.attempts) == ("leased", "other", taken.item.attempt)
