"""The pipeline over HTTP, for operators: stage statistics, an item's trace, a batch's items, re-queuing
parked items."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from tranche.api.app import container_of
from tranche.bootstrap import Container
from tranche.pipeline import (
    ItemView,
    get_item,
    item_trace,
    items_by_trace_key,
    retry_parked,
    stage_stats,
)
from tranche.store.engine import reading

router = APIRouter(tags=["pipeline"])
ContainerDep = Annotated[Container, Depends(container_of)]


class StageOut(BaseModel):
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
    rate_per_second: float


class StagesOut(BaseModel):
    stages: list[StageOut]
    runner: str | None


class ItemOut(BaseModel):
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


class TraceEntryOut(BaseModel):
    at: datetime
    stage: str
    event: str
    attempt: int
    detail: str | None


class TraceOut(BaseModel):
    item: ItemOut
    trace: list[TraceEntryOut]


class ItemsOut(BaseModel):
    items: list[ItemOut]
    next: str | None


def _item_out(view: ItemView) -> ItemOut:
    return ItemOut(**view.__dict__)


@router.get(
    "/pipeline/stages", summary="Per stage: depth, in flight, waiting to retry, parked, breaker, rate"
)
def stages(container: ContainerDep) -> StagesOut:
    """Counts come from the store, so they cover every process; breaker states are this process's."""
    runner = container.runner
    with reading(container.engine) as conn:
        found = stage_stats(
            conn,
            now=container.clock.now(),
            pipelines=list(runner.pipelines.values()),
            breakers=runner.breaker_states(),
        )
    return StagesOut(
        stages=[StageOut(**s.__dict__, rate_per_second=s.rate_per_second) for s in found],
        runner=runner.owner,
    )


@router.get("/items/{item_id}/trace", summary="A pipeline item and every transition it went through")
def trace(item_id: str, container: ContainerDep) -> TraceOut:
    with reading(container.engine) as conn:
        item = get_item(conn, item_id)
        entries = item_trace(conn, item_id)
    return TraceOut(item=_item_out(item), trace=[TraceEntryOut(**e.__dict__) for e in entries])


@router.get("/pipeline/items", summary="The pipeline items of a trace key (e.g. every item of one batch)")
def items(
    container: ContainerDep,
    trace_key: Annotated[str, Query(min_length=1, description="e.g. a batch id")],
    after: Annotated[str | None, Query(description="the `next` cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ItemsOut:
    with reading(container.engine) as conn:
        found = items_by_trace_key(conn, trace_key, limit=limit, after=after)
    following = None
    if len(found) == limit:
        following = "/v1/pipeline/items?" + urlencode(
            {"trace_key": trace_key, "after": found[-1].id, "limit": limit}
        )
    return ItemsOut(items=[_item_out(v) for v in found], next=following)


@router.post(
    "/pipeline/parked/{item_id}/retry", summary="Re-queue a parked item at its stage, attempts reset"
)
def retry(item_id: str, container: ContainerDep) -> ItemOut:
    with container.engine.begin() as conn:
        item = retry_parked(conn, item_id, now=container.clock.now())
    container.runner.notify(item.stage)
    return _item_out(item)
