"""What operators and the API ask of the pipeline: stage statistics, an item's trace, the items of a batch,
and re-queuing parked or failed items."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from tranche.pipeline.errors import ItemNotFoundError, ItemNotRetryableError
from tranche.pipeline.model import (
    DONE,
    FAILED,
    LEASED,
    PARKED,
    READY,
    REQUEUED,
    RETRY_WAIT,
    SUCCEEDED,
    Pipeline,
)
from tranche.pipeline.tables import pipeline_items, pipeline_trace
from tranche.shared.clock import stored_utc

RATE_WINDOW = timedelta(minutes=1)


@dataclass(frozen=True)
class StageStats:
    """Counts of one stage's items by status, its breaker, and its completions in the last minute."""

    pipeline: str
    stage: str
    ready: int
    in_flight: int
    retry_wait: int
    parked: int
    failed: int
    done: int
    breaker: str | None
    completed_last_minute: int

    @property
    def rate_per_second(self) -> float:
        """Completions per second over the last minute."""
        return self.completed_last_minute / RATE_WINDOW.total_seconds()


@dataclass(frozen=True)
class TraceEntry:
    """One transition of an item."""

    at: datetime
    stage: str
    event: str
    attempt: int
    detail: str | None


@dataclass(frozen=True)
class ItemView:
    """An item as it is stored."""

    id: str
    pipeline: str
    stage: str
    partition: str
    sequence: int
    status: str
    attempts: int
    next_run_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: str | None
    trace_key: str | None
    parent_id: str | None
    created_at: datetime
    updated_at: datetime
    payload: dict[str, Any]


def stage_stats(
    conn: Connection,
    *,
    now: datetime | None = None,
    pipelines: Sequence[Pipeline] = (),
    breakers: Mapping[str, str] | None = None,
) -> list[StageStats]:
    """Per stage: ready, in flight, waiting to retry, parked, failed, done, breaker and recent completions.

    Stages of ``pipelines`` are listed in declaration order even when empty; stages found only in the store
    follow, sorted. ``breakers`` maps a stage name to its breaker state in this process (see
    :meth:`PipelineRunner.breaker_states`).
    """
    now = now or datetime.now(UTC)
    t = pipeline_items
    counts: dict[tuple[str, str], dict[str, int]] = {}
    rows = conn.execute(
        select(t.c.pipeline, t.c.stage, t.c.status, func.count()).group_by(
            t.c.pipeline, t.c.stage, t.c.status
        )
    )
    for pipeline, stage, status, n in rows:
        counts.setdefault((pipeline, stage), {})[status] = n
    tr = pipeline_trace
    recent: dict[str, int] = dict(
        conn.execute(
            select(tr.c.stage, func.count())
            .where(tr.c.at >= now - RATE_WINDOW, tr.c.event == SUCCEEDED)
            .group_by(tr.c.stage)
        )
        .tuples()
        .all()
    )
    keys = [(p.name, s.name) for p in pipelines for s in p.stages]
    keys += sorted(k for k in counts if k not in set(keys))
    breakers = breakers or {}
    result = []
    for pipeline_name, stage_name in keys:
        c = counts.get((pipeline_name, stage_name), {})
        result.append(
            StageStats(
                pipeline=pipeline_name,
                stage=stage_name,
                ready=c.get(READY, 0),
                in_flight=c.get(LEASED, 0),
                retry_wait=c.get(RETRY_WAIT, 0),
                parked=c.get(PARKED, 0),
                failed=c.get(FAILED, 0),
                done=c.get(DONE, 0),
                breaker=breakers.get(stage_name),
                completed_last_minute=int(recent.get(stage_name, 0)),
            )
        )
    return result


def item_trace(conn: Connection, item_id: str) -> list[TraceEntry]:
    """Every transition of an item, oldest first; :class:`ItemNotFoundError` if there is no such item."""
    tr = pipeline_trace
    rows = conn.execute(
        select(tr.c.at, tr.c.stage, tr.c.event, tr.c.attempt, tr.c.detail)
        .where(tr.c.item_id == item_id)
        .order_by(tr.c.id)
    ).all()
    if (
        not rows
        and conn.execute(select(pipeline_items.c.id).where(pipeline_items.c.id == item_id)).first() is None
    ):
        raise ItemNotFoundError(f"no pipeline item {item_id}", record=item_id)
    return [TraceEntry(stored_utc(r.at), r.stage, r.event, r.attempt, r.detail) for r in rows]


def _view(row: Any) -> ItemView:
    return ItemView(
        id=row.id,
        pipeline=row.pipeline,
        stage=row.stage,
        partition=row.partition,
        sequence=row.sequence,
        status=row.status,
        attempts=row.attempts,
        next_run_at=stored_utc(row.next_run_at) if row.next_run_at is not None else None,
        lease_owner=row.lease_owner,
        lease_expires_at=stored_utc(row.lease_expires_at) if row.lease_expires_at is not None else None,
        last_error=row.last_error,
        trace_key=row.trace_key,
        parent_id=row.parent_id,
        created_at=stored_utc(row.created_at),
        updated_at=stored_utc(row.updated_at),
        payload=row.payload,
    )


def get_item(conn: Connection, item_id: str) -> ItemView:
    """One item; :class:`ItemNotFoundError` if there is none."""
    row = conn.execute(select(pipeline_items).where(pipeline_items.c.id == item_id)).first()
    if row is None:
        raise ItemNotFoundError(f"no pipeline item {item_id}", record=item_id)
    return _view(row)


def items_by_trace_key(
    conn: Connection, trace_key: str, *, limit: int = 100, after: str | None = None
) -> list[ItemView]:
    """The items carrying ``trace_key`` (e.g. every item of one batch), by id, ``limit`` at a time after the
    id ``after``."""
    t = pipeline_items
    query = select(t).where(t.c.trace_key == trace_key)
    if after is not None:
        query = query.where(t.c.id > after)
    return [_view(row) for row in conn.execute(query.order_by(t.c.id).limit(limit))]


RETRYABLE = (PARKED, FAILED)
"""The statuses an operator can put back: parked (out of attempts) and failed (a terminal error)."""


def retry_item(conn: Connection, item_id: str, *, now: datetime | None = None) -> ItemView:
    """Put a parked or failed item back to ``ready`` at its stage with its attempts reset, traced
    ``requeued`` (after an operator fixed what stopped it: a service, a lender's rules).

    Raises :class:`ItemNotFoundError`, or :class:`ItemNotRetryableError` for an item still on its way or done.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    t = pipeline_items
    previous = conn.execute(select(t.c.status).where(t.c.id == item_id)).scalar()
    if previous is None:
        raise ItemNotFoundError(f"no pipeline item {item_id}", record=item_id)
    result = conn.execute(
        update(t)
        .where(t.c.id == item_id, t.c.status.in_(RETRYABLE))
        .values(status=READY, attempts=0, next_run_at=now, last_error=None, updated_at=now)
    )
    if result.rowcount != 1:
        current = get_item(conn, item_id)
        raise ItemNotRetryableError(
            f"item {item_id} is {current.status}: only a parked or failed item can be retried",
            record=item_id,
            field="status",
        )
    item = get_item(conn, item_id)
    conn.execute(
        insert(pipeline_trace).values(
            item_id=item_id,
            at=now,
            stage=item.stage,
            event=REQUEUED,
            attempt=0,
            detail=f"{previous}, put back by an operator",
        )
    )
    return item


retry_parked = retry_item
"""The former name of :func:`retry_item`, from when only parked items could be re-queued."""


def retry_items(
    conn: Connection,
    *,
    trace_key: str | None = None,
    stage: str | None = None,
    statuses: Sequence[str] = RETRYABLE,
    limit: int = 1000,
    now: datetime | None = None,
) -> list[str]:
    """Put back up to ``limit`` parked or failed items of a trace key (a batch) and/or a stage, as
    :func:`retry_item` does one; returns their ids (call again while it returns ``limit`` of them)."""
    unknown = set(statuses) - set(RETRYABLE)
    if unknown or not statuses:
        raise ItemNotRetryableError(
            f"only parked or failed items can be retried, not {sorted(unknown) or 'none'}", field="status"
        )
    now = (now or datetime.now(UTC)).astimezone(UTC)
    t = pipeline_items
    # Locked until the end of the caller's transaction, so that the trace says what the update did.
    query = select(t.c.id, t.c.stage, t.c.status).where(t.c.status.in_(tuple(statuses))).with_for_update()
    if trace_key is not None:
        query = query.where(t.c.trace_key == trace_key)
    if stage is not None:
        query = query.where(t.c.stage == stage)
    rows = conn.execute(query.order_by(t.c.id).limit(limit)).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    conn.execute(
        update(t)
        .where(t.c.id.in_(ids), t.c.status.in_(RETRYABLE))
        .values(status=READY, attempts=0, next_run_at=now, last_error=None, updated_at=now)
    )
    conn.execute(
        insert(pipeline_trace),
        [
            {
                "item_id": row.id,
                "at": now,
                "stage": row.stage,
                "event": REQUEUED,
                "attempt": 0,
                "detail": f"{row.status}, put back by an operator",
            }
            for row in rows
        ],
    )
    return ids
