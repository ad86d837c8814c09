"""The pipeline over HTTP, for operators: stage statistics, an item's trace, a batch's items, putting parked or
failed items back, the registered workers, and pinning lenders to a worker at run time."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from tranche.api.app import container_of
from tranche.api.params import ItemId, PartitionId
from tranche.bootstrap import Container
from tranche.pipeline import (
    ItemView,
    get_item,
    item_trace,
    items_by_trace_key,
    list_pins,
    list_workers,
    pin,
    retry_item,
    retry_items,
    stage_stats,
    unpin,
)
from tranche.shared.ids import ID_MAX_LENGTH, ID_PATTERN
from tranche.store.engine import reading

router = APIRouter(tags=["pipeline"])
ContainerDep = Annotated[Container, Depends(container_of)]

# What reaches SQL is bounded here, so that no value can fail in the database instead (a NUL byte is refused
# by PostgreSQL, an over-long key would only scan for nothing).
TRACE_KEY_PATTERN = r"^[^\x00-\x1f\x7f]{1,128}$"
STAGE_PATTERN = ID_PATTERN


class ErrorDetail(BaseModel):
    code: str
    message: str
    record: str | None = None
    field: str | None = None


class ErrorOut(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {
        404: "no such item",
        409: "the item is not parked or failed",
        422: "a parameter is out of range or malformed",
    }
    return {status: {"model": ErrorOut, "description": described[status]} for status in statuses}


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


class RetriedOut(BaseModel):
    requeued: list[str] = Field(description="ids of the items put back, at most `limit`")


class WorkerOut(BaseModel):
    id: str
    name: str
    node: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    alive: bool
    leases: int


class WorkersOut(BaseModel):
    workers: list[WorkerOut]


class PinIn(BaseModel):
    worker: str = Field(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH, description="a worker name")


class PinOut(BaseModel):
    partition: str
    worker: str
    pinned_at: datetime
    obeyed: bool = Field(description="false while no worker of that name is running: every worker serves it")


class PinsOut(BaseModel):
    pins: list[PinOut]


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


@router.get(
    "/items/{item_id}/trace",
    summary="A pipeline item and every transition it went through",
    responses=_errors(404, 422),
)
def trace(item_id: ItemId, container: ContainerDep) -> TraceOut:
    with reading(container.engine) as conn:
        item = get_item(conn, item_id)
        entries = item_trace(conn, item_id)
    return TraceOut(item=_item_out(item), trace=[TraceEntryOut(**e.__dict__) for e in entries])


@router.get(
    "/pipeline/items",
    summary="The pipeline items of a trace key (e.g. every item of one batch)",
    responses=_errors(422),
)
def items(
    container: ContainerDep,
    trace_key: Annotated[
        str, Query(pattern=TRACE_KEY_PATTERN, max_length=128, description="e.g. a batch id")
    ],
    after: Annotated[
        str | None,
        Query(
            pattern=ID_PATTERN, max_length=ID_MAX_LENGTH, description="the `next` cursor of the previous page"
        ),
    ] = None,
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


def _retry(item_id: str, container: Container) -> ItemOut:
    with container.engine.begin() as conn:
        item = retry_item(conn, item_id, now=container.clock.now())
    container.runner.notify(item.stage)
    return _item_out(item)


@router.post(
    "/pipeline/items/{item_id}/retry",
    summary="Put a parked or failed item back at its stage, attempts reset",
    responses=_errors(404, 409, 422),
)
def retry(item_id: ItemId, container: ContainerDep) -> ItemOut:
    """For an item parked after its attempts, or failed on a terminal error, once what stopped it is fixed."""
    return _retry(item_id, container)


@router.post(
    "/pipeline/parked/{item_id}/retry",
    summary="Put a parked or failed item back (the former path of /pipeline/items/{item_id}/retry)",
    responses=_errors(404, 409, 422),
)
def retry_parked(item_id: ItemId, container: ContainerDep) -> ItemOut:
    return _retry(item_id, container)


@router.post(
    "/pipeline/items/retry",
    summary="Put back the parked and failed items of a batch (trace key) and/or a stage, up to `limit`",
    responses=_errors(422),
)
def retry_many(
    container: ContainerDep,
    trace_key: Annotated[
        str | None, Query(pattern=TRACE_KEY_PATTERN, max_length=128, description="e.g. a batch id")
    ] = None,
    stage: Annotated[
        str | None, Query(pattern=STAGE_PATTERN, max_length=ID_MAX_LENGTH, description="e.g. intake.assess")
    ] = None,
    status: Annotated[list[Literal["parked", "failed"]] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> RetriedOut:
    """Call again while it answers `limit` ids. Without `trace_key` and `stage` it puts back every parked
    and failed item."""
    with container.engine.begin() as conn:
        ids = retry_items(
            conn,
            trace_key=trace_key,
            stage=stage,
            statuses=tuple(status) if status else ("parked", "failed"),
            limit=limit,
            now=container.clock.now(),
        )
    if ids:
        container.runner.notify()
    return RetriedOut(requeued=ids)


@router.get("/pipeline/workers", summary="The registered pipeline workers, their heartbeat and leases")
def workers(container: ContainerDep) -> WorkersOut:
    runner = container.runner
    with reading(container.engine) as conn:
        found = list_workers(conn, now=container.clock.now(), timeout=runner.worker_timeout)
    return WorkersOut(workers=[WorkerOut(**w.__dict__) for w in found])


@router.get(
    "/pipeline/pins", summary="Partitions (lenders) pinned to a worker, and whether each pin is obeyed"
)
def pins(container: ContainerDep) -> PinsOut:
    with reading(container.engine) as conn:
        found = list_pins(conn, now=container.clock.now(), timeout=container.runner.worker_timeout)
    return PinsOut(pins=[PinOut(**p.__dict__) for p in found])


@router.put(
    "/pipeline/pins/{partition}",
    summary="Pin a partition (a lender) to the workers of one name; they pick it up within a heartbeat",
    responses=_errors(422),
)
def put_pin(partition: PartitionId, body: PinIn, container: ContainerDep) -> PinOut:
    """Only workers named `worker` claim the partition's items from their next heartbeat on (about two
    seconds), while one of them is alive; when none is, every worker serves it and logs a warning."""
    now = container.clock.now()
    with container.engine.begin() as conn:
        pin(conn, partition, body.worker, now=now)
        found = list_pins(conn, now=now, timeout=container.runner.worker_timeout)
    return PinOut(**next(p for p in found if p.partition == partition).__dict__)


@router.delete(
    "/pipeline/pins/{partition}",
    summary="Unpin a partition: every worker serves it again (idempotent)",
    status_code=204,
    responses=_errors(422),
)
def delete_pin(partition: PartitionId, container: ContainerDep) -> Response:
    with container.engine.begin() as conn:
        unpin(conn, partition)
    return Response(status_code=204)
