"""Ordered stages keep sequence order per partition: batch n+1 does not pass an ordered stage before every
item of batch n has passed it."""

from __future__ import annotations

from itertools import count
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline_toys import create_effects, effect_rows, later, put, recorder
from sqlalchemy import Engine, select

from tranche.pipeline import (
    Item,
    NewItem,
    Pipeline,
    PipelineRunner,
    RetryableError,
    RetryPolicy,
    Stage,
    TerminalError,
    enqueue,
)
from tranche.pipeline.tables import pipeline_items
from tranche.shared.clock import ManualClock

RETRY = RetryPolicy(max_attempts=10, initial_delay=1.0, multiplier=2.0, max_delay=8.0, jitter=0.0)
_examples = count()


@pytest.fixture
def db(engine: Engine) -> Engine:
    create_effects(engine)
    return engine


def failing_first(attempts_to_fail: dict[tuple[str, int, int], int]) -> Any:
    """Work that fails an item's first N attempts, N looked up by (partition, sequence, index)."""

    def work(item: Item) -> None:
        key = (item.partition, item.sequence, item.payload["n"])
        if item.attempt <= attempts_to_fail.get(key, 0):
            raise RetryableError(f"scripted failure {item.attempt}")

    return work


def statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(pipeline_items.c.id, pipeline_items.c.status)).tuples().all())


def test_batch_n_plus_one_waits_at_an_ordered_stage_until_batch_n_has_passed_it(db: Engine) -> None:
    clock = ManualClock()
    stages = [
        Stage("toy.read", recorder("toy.diff"), work=failing_first({("lender-1", 1, 0): 1}), retry=RETRY),
        Stage("toy.diff", recorder(None), ordered=True),
    ]
    r = PipelineRunner(db, [Pipeline("toy", stages)], clock=clock)
    batch1 = put(db, "toy.read", sequence=1, count=3)
    batch2 = put(db, "toy.read", sequence=2, count=3)
    neighbour = put(db, "toy.read", partition="lender-2", sequence=5, count=2)

    r.run_until_idle()

    diffed = {row.item_id for row in effect_rows(db, "toy.diff")}
    assert diffed == set(batch1[1:]) | set(neighbour)  # batch 2 waits for batch 1's retried item
    state = statuses(db)
    assert [state[i] for i in batch2] == ["ready"] * 3
    assert len(effect_rows(db, "toy.read")) == 7  # the unordered stage before it was not held up

    later(clock, 1.0)
    r.run_until_idle()

    order = [row.sequence for row in effect_rows(db, "toy.diff") if row.partition == "lender-1"]
    assert order == [1, 1, 1, 2, 2, 2]


def test_a_failed_item_does_not_hold_back_later_batches_but_a_parked_one_does(db: Engine) -> None:
    clock = ManualClock()

    def verdict(item: Item) -> None:
        if item.payload["n"] == 0 and item.sequence == 1:
            raise TerminalError("400")
        if item.payload["n"] == 0 and item.sequence == 3:
            raise RetryableError("503")

    stages = [
        Stage("toy.read", recorder("toy.diff"), work=verdict, retry=RetryPolicy(max_attempts=1)),
        Stage("toy.diff", recorder(None), ordered=True),
    ]
    r = PipelineRunner(db, [Pipeline("toy", stages)], clock=clock)
    put(db, "toy.read", sequence=1, count=2)
    put(db, "toy.read", sequence=2, count=2)
    put(db, "toy.read", sequence=3, count=2)
    blocked = put(db, "toy.read", sequence=4, count=2)

    r.run_until_idle()

    assert sorted(row.sequence for row in effect_rows(db, "toy.diff")) == [1, 2, 2, 3]
    state = statuses(db)
    assert [state[i] for i in blocked] == ["ready", "ready"]  # sequence 3 has a parked item


def test_children_of_one_parent_share_its_sequence_and_do_not_wait_for_each_other(db: Engine) -> None:
    clock = ManualClock()

    def fan_out(conn: Any, item: Item, _: Any) -> Any:
        from tranche.pipeline import Next

        children = tuple(
            NewItem("toy.diff", {"n": n}, partition=item.partition, sequence=item.sequence) for n in range(3)
        )
        return Next(None, children=children)

    stages = [
        Stage("toy.read", fan_out),
        Stage(
            "toy.diff", recorder(None), ordered=True, work=failing_first({("lender-1", 1, 0): 1}), retry=RETRY
        ),
    ]
    r = PipelineRunner(db, [Pipeline("toy", stages)], clock=clock)
    put(db, "toy.read", sequence=1)
    put(db, "toy.read", sequence=2)

    r.run_until_idle()

    # Siblings of the retried child went on; the next batch's children wait for it.
    assert [row.sequence for row in effect_rows(db, "toy.diff")] == [1, 1]
    later(clock, 1.0)
    r.run_until_idle()
    assert [row.sequence for row in effect_rows(db, "toy.diff")] == [1, 1, 1, 2, 2, 2]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(min_value=1, max_value=4)), min_size=1, max_size=6
    ),
    failures=st.lists(st.integers(min_value=0, max_value=2), min_size=30, max_size=30),
    diff_failures=st.lists(st.integers(min_value=0, max_value=2), min_size=30, max_size=30),
)
def test_an_ordered_stage_applies_each_partition_in_sequence_order_whatever_fails(
    db: Engine, batches: list[tuple[str, int]], failures: list[int], diff_failures: list[int]
) -> None:
    example = next(_examples)
    clock = ManualClock()
    read_failures: dict[tuple[str, int, int], int] = {}
    diff_script: dict[tuple[str, int, int], int] = {}
    sequences: dict[str, int] = {}
    expected = 0
    with db.begin() as conn:
        for k, (lender, size) in enumerate(batches):
            partition = f"{lender}-{example}"
            sequences[partition] = sequences.get(partition, 0) + 1
            for n in range(size):
                key = (partition, sequences[partition], n)
                read_failures[key] = failures[(k * 4 + n) % 30]
                diff_script[key] = diff_failures[(k * 4 + n) % 30]
                enqueue(
                    conn,
                    "toy",
                    NewItem("toy.read", {"n": n}, partition=partition, sequence=sequences[partition]),
                    now=clock.now(),
                )
                expected += 1
    stages = [
        Stage(
            "toy.read", recorder("toy.diff"), work=failing_first(read_failures), retry=RETRY, claim_batch=3
        ),
        Stage(
            "toy.diff",
            recorder(None),
            work=failing_first(diff_script),
            retry=RETRY,
            ordered=True,
            claim_batch=2,
        ),
    ]
    r = PipelineRunner(db, [Pipeline("toy", stages)], clock=clock)
    for _ in range(30):
        r.run_until_idle()
        later(clock, 8.0)

    applied = [row for row in effect_rows(db, "toy.diff") if row.partition.endswith(f"-{example}")]
    assert len(applied) == expected
    for partition in sequences:
        order = [row.sequence for row in applied if row.partition == partition]
        assert order == sorted(order)
