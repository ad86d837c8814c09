"""Toy stages for pipeline tests: a side-effect table written by ``commit`` (to count applications) and a
flaky fake dependency with scripted failures."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import Column, Connection, Engine, Integer, MetaData, String, Table, func, insert, select

from tranche.pipeline import Item, NewItem, Next, enqueue
from tranche.shared.clock import ManualClock

# Not on tranche's metadata: this table exists only in test databases.
toy_metadata = MetaData()
effects = Table(
    "pipeline_toy_effects",
    toy_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_id", String(40), nullable=False),
    Column("stage", String(128), nullable=False),
    Column("partition", String(128), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("note", String(200), nullable=True),
)


def create_effects(engine: Engine) -> None:
    toy_metadata.create_all(engine)


def record(conn: Connection, item: Item, note: str | None = None) -> None:
    """The side effect a commit applies; a doubled commit shows up as two rows."""
    conn.execute(
        insert(effects).values(
            item_id=item.id, stage=item.stage, partition=item.partition, sequence=item.sequence, note=note
        )
    )


def recorder(next_stage: str | None) -> Callable[[Connection, Item, Any], Next]:
    """A commit that records its effect and sends the item to ``next_stage``."""

    def commit(conn: Connection, item: Item, result: Any) -> Next:
        record(conn, item, None if result is None else str(result))
        return Next(next_stage)

    return commit


def effect_rows(engine: Engine, stage: str | None = None) -> list[Any]:
    query = select(effects).order_by(effects.c.id)
    if stage is not None:
        query = query.where(effects.c.stage == stage)
    with engine.connect() as conn:
        return list(conn.execute(query))


def doubled(engine: Engine) -> list[Any]:
    """(item, stage) pairs applied more than once."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(effects.c.item_id, effects.c.stage, func.count())
                .group_by(effects.c.item_id, effects.c.stage)
                .having(func.count() > 1)
            )
        )


class Flaky:
    """A fake external dependency: each call takes the next scripted outcome (an exception to raise, or None
    to succeed); once the script runs out every call succeeds. Thread-safe; counts calls."""

    def __init__(self, script: Iterable[BaseException | None] = ()) -> None:
        self.script = list(script)
        self.calls = 0
        self.down = False
        self.down_error: BaseException | None = None
        self._lock = threading.Lock()

    def __call__(self, item: Item) -> str:
        with self._lock:
            self.calls += 1
            if self.down and self.down_error is not None:
                raise self.down_error
            outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        return f"ok:{item.id}"


def put(
    engine: Engine,
    stage: str,
    *,
    partition: str = "lender-1",
    sequence: int = 1,
    count: int = 1,
    trace_key: str | None = None,
    pipeline: str = "toy",
    clock: ManualClock | None = None,
) -> list[str]:
    with engine.begin() as conn:
        return [
            enqueue(
                conn,
                pipeline,
                NewItem(stage, {"n": n}, partition=partition, sequence=sequence, trace_key=trace_key),
                now=clock.now() if clock else None,
            )
            for n in range(count)
        ]


def later(clock: ManualClock, seconds: float) -> None:
    clock.advance(timedelta(seconds=seconds))
