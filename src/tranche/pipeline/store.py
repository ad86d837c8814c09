"""The pipeline's state in the store: enqueue, claim with leases, and fenced transitions.

Every function takes the caller's ``Connection`` and runs inside the caller's transaction. Claims rely on the
engine beginning SQLite transactions with ``BEGIN IMMEDIATE`` (one writer at a time) and on PostgreSQL's
``FOR UPDATE SKIP LOCKED`` (claimers pass over each other's rows). Every transition of a leased item is
*fenced*: it only applies while the item is still leased under the token its claim received, so a worker
whose lease was taken over changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, exists, insert, or_, select, update

from tranche.pipeline.errors import PipelineDeclarationError
from tranche.pipeline.model import (
    CLAIMED,
    DONE,
    ENQUEUED,
    FAILED,
    FAILED_EVENT,
    LEASE_EXPIRED,
    LEASED,
    PARKED,
    PARKED_EVENT,
    READY,
    RELEASED,
    RETRY_SCHEDULED,
    RETRY_WAIT,
    SUCCEEDED,
    UNFINISHED,
    Item,
    NewItem,
    Next,
    Pipeline,
    Stage,
)
from tranche.pipeline.tables import pipeline_items, pipeline_trace
from tranche.shared.ids import new_id

_items = pipeline_items
_trace = pipeline_trace
DETAIL_LIMIT = 4000


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("pipeline timestamps must be timezone-aware")
    return moment.astimezone(UTC)


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= DETAIL_LIMIT:
        return text
    return text[: DETAIL_LIMIT - 1] + "…"


@dataclass(frozen=True)
class Lease:
    """A claimed item and the proof of the claim that every later transition must present."""

    item: Item
    owner: str
    token: str
    expires_at: datetime


def trace(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Append trace rows (``item_id, at, stage, event, attempt, detail``); the trace is never updated."""
    if rows:
        conn.execute(_INSERT_TRACE, [dict(row, detail=_clip(row.get("detail"))) for row in rows])


def _trace_row(
    item_id: str, at: datetime, stage: str, event: str, attempt: int, detail: str | None = None
) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "at": at,
        "stage": stage,
        "event": event,
        "attempt": attempt,
        "detail": detail,
    }


def insert_items(conn: Connection, pipeline: str, items: Iterable[NewItem], now: datetime) -> list[str]:
    """Insert items as ``ready`` at their stage, each traced ``enqueued``; returns their ids in order."""
    now = _utc(now)
    rows: list[dict[str, Any]] = []
    traces: list[dict[str, Any]] = []
    for item in items:
        item_id = new_id("itm")
        rows.append(
            {
                "id": item_id,
                "pipeline": pipeline,
                "stage": item.stage,
                "partition": item.partition,
                "sequence": item.sequence,
                "payload": item.payload,
                "status": READY,
                "attempts": 0,
                "next_run_at": now,
                "lease_owner": None,
                "lease_token": None,
                "lease_expires_at": None,
                "last_error": None,
                "trace_key": item.trace_key,
                "parent_id": item.parent_id,
                "created_at": now,
                "updated_at": now,
            }
        )
        detail = f"child of {item.parent_id}" if item.parent_id else None
        traces.append(_trace_row(item_id, now, item.stage, ENQUEUED, 0, detail))
    if rows:
        conn.execute(_INSERT_ITEMS, rows)
        trace(conn, traces)
    return [row["id"] for row in rows]


def enqueue(conn: Connection, pipeline: str, item: NewItem, *, now: datetime | None = None) -> str:
    """Put a new item at ``item.stage`` of ``pipeline``, in the caller's transaction; returns its id.

    A ready item is claimable at once whatever the clock says; ``now`` (default: the system clock) only
    stamps it and orders it first-in first-out among the ready items of its stage.
    """
    return insert_items(conn, pipeline, [item], now or datetime.now(UTC))[0]


# Statements are built once and reused: building and hashing a statement costs more than running it.
_INSERT_ITEMS = insert(_items)
_INSERT_TRACE = insert(_trace)
_FENCE = (
    _items.c.id == bindparam("_id"),
    _items.c.status == LEASED,
    _items.c.lease_token == bindparam("_token"),
)
# The SET clause comes from the parameters' keys.
_FENCED = update(_items).where(*_FENCE)
_FENCED_RELEASE = update(_items).where(*_FENCE).values(attempts=_items.c.attempts - 1)
_LEASE = (
    update(_items)
    .where(_items.c.id.in_(bindparam("_ids", expanding=True)))
    .values(attempts=_items.c.attempts + 1)
)
_claim_statements: dict[tuple[Any, ...], Any] = {}


def _claim_select(pipeline: Pipeline, stage: Stage, *, fresh: bool, excluding: bool) -> Any:
    """The select of claimable rows (parameters ``_now``, ``_limit`` and, when ``excluding``, ``_excluded``),
    built once per stage and kind."""
    ordered_over = pipeline.up_to(stage.name) if stage.ordered else None
    key = (pipeline.name, stage.name, fresh, excluding, ordered_over)
    statement = _claim_statements.get(key)
    if statement is not None:
        return statement
    t = _items
    query = select(
        t.c.id,
        t.c.partition,
        t.c.sequence,
        t.c.payload,
        t.c.attempts,
        t.c.trace_key,
        t.c.parent_id,
        t.c.status,
        t.c.lease_owner,
    ).where(t.c.pipeline == pipeline.name, t.c.stage == stage.name)
    if fresh:
        query = query.where(t.c.status == READY)
    else:
        # Due retries, and leases whose holder let them expire (a worker killed mid-item).
        query = query.where(t.c.status.in_((RETRY_WAIT, LEASED)), t.c.next_run_at <= bindparam("_now"))
    if excluding:
        query = query.where(t.c.partition.not_in(bindparam("_excluded", expanding=True)))
    if ordered_over is not None:
        earlier = _items.alias("earlier")
        query = query.where(
            ~exists().where(
                earlier.c.pipeline == t.c.pipeline,
                earlier.c.partition == t.c.partition,
                earlier.c.status.in_(UNFINISHED),
                earlier.c.sequence < t.c.sequence,
                earlier.c.stage.in_(ordered_over),
            )
        )
    statement = (
        query.order_by(t.c.next_run_at).limit(bindparam("_limit")).with_for_update(skip_locked=True, of=t)
    )
    _claim_statements[key] = statement
    return statement


def claim(
    conn: Connection,
    pipeline: Pipeline,
    stage: Stage,
    *,
    owner: str,
    now: datetime,
    limit: int,
    excluded: frozenset[str] = frozenset(),
) -> list[Lease]:
    """Lease up to ``limit`` due items of ``stage``: due retries and expired leases first, then ready items.

    Items of the partitions in ``excluded`` (pinned to another worker) are left alone. Each claim counts as
    an attempt and gets a fresh fencing token.
    """
    now = _utc(now)
    excluding = bool(excluded)
    params: dict[str, Any] = {"_now": now, "_limit": limit}
    if excluding:
        params["_excluded"] = sorted(excluded)
    rows = list(conn.execute(_claim_select(pipeline, stage, fresh=False, excluding=excluding), params))
    if len(rows) < limit:
        params["_limit"] = limit - len(rows)
        params.pop("_now")
        rows += list(conn.execute(_claim_select(pipeline, stage, fresh=True, excluding=excluding), params))
    if not rows:
        return []
    token = os.urandom(12).hex()
    expires = now + timedelta(seconds=stage.lease_seconds)
    conn.execute(
        _LEASE,
        {
            "_ids": [row.id for row in rows],
            "status": LEASED,
            "lease_owner": owner,
            "lease_token": token,
            "lease_expires_at": expires,
            "next_run_at": expires,
            "updated_at": now,
        },
    )
    leases = []
    traces = []
    for row in rows:
        attempt = row.attempts + 1
        if row.status == LEASED:
            traces.append(
                _trace_row(
                    row.id, now, stage.name, LEASE_EXPIRED, row.attempts, f"lease of {row.lease_owner}"
                )
            )
        traces.append(_trace_row(row.id, now, stage.name, CLAIMED, attempt, owner))
        item = Item(
            id=row.id,
            pipeline=pipeline.name,
            stage=stage.name,
            partition=row.partition,
            sequence=row.sequence,
            payload=row.payload,
            attempt=attempt,
            trace_key=row.trace_key,
            parent_id=row.parent_id,
        )
        leases.append(Lease(item=item, owner=owner, token=token, expires_at=expires))
    trace(conn, traces)
    return leases


def _fenced(conn: Connection, lease: Lease, values: dict[str, Any], *, release: bool = False) -> bool:
    params = {
        "_id": lease.item.id,
        "_token": lease.token,
        "lease_owner": None,
        "lease_token": None,
        "lease_expires_at": None,
        **values,
    }
    result = conn.execute(_FENCED_RELEASE if release else _FENCED, params)
    return result.rowcount == 1


def complete(conn: Connection, pipeline: Pipeline, lease: Lease, nxt: Next, now: datetime) -> bool:
    """Move a leased item on as ``nxt`` says and enqueue its children; False (and nothing written by this
    function) when the lease was lost, in which case the caller must roll back."""
    now = _utc(now)
    item = lease.item
    if nxt.stage is not None and not pipeline.has_stage(nxt.stage):
        raise PipelineDeclarationError(
            f"stage {item.stage!r} sent item {item.id} to {nxt.stage!r}, which pipeline {pipeline.name!r} "
            "does not have",
            record=item.stage,
            field="stage",
        )
    for child in nxt.children:
        if not pipeline.has_stage(child.stage):
            raise PipelineDeclarationError(
                f"stage {item.stage!r} created a child at {child.stage!r}, which pipeline {pipeline.name!r} "
                "does not have",
                record=item.stage,
                field="stage",
            )
    values: dict[str, Any] = {"updated_at": now, "last_error": None}
    if nxt.stage is None:
        values.update(status=DONE, next_run_at=None)
        detail = "done"
    else:
        values.update(status=READY, stage=nxt.stage, attempts=0, next_run_at=now)
        detail = f"to {nxt.stage}"
    if nxt.payload is not None:
        values["payload"] = nxt.payload
    if not _fenced(conn, lease, values):
        return False
    if nxt.children:
        detail += f"; {len(nxt.children)} children"
    trace(conn, [_trace_row(item.id, now, item.stage, SUCCEEDED, item.attempt, detail)])
    if nxt.children:
        children = [
            child if child.parent_id is not None else _with_parent(child, item.id) for child in nxt.children
        ]
        insert_items(conn, pipeline.name, children, now)
    return True


def _with_parent(child: NewItem, parent_id: str) -> NewItem:
    from dataclasses import replace

    return replace(child, parent_id=parent_id)


def schedule_retry(
    conn: Connection, lease: Lease, *, error: str, run_at: datetime, now: datetime, refund: bool = False
) -> bool:
    """Wait until ``run_at``, then retry at the same stage; False when the lease was lost.

    ``refund`` gives back the attempt the claim counted (the failure was the dependency's, not the item's).
    """
    now = _utc(now)
    run_at = _utc(run_at)
    ok = _fenced(
        conn,
        lease,
        {"status": RETRY_WAIT, "next_run_at": run_at, "last_error": _clip(error), "updated_at": now},
        release=refund,
    )
    if ok:
        delay = (run_at - now).total_seconds()
        attempt = lease.item.attempt - 1 if refund else lease.item.attempt
        note = " (dependency down: attempt not counted)" if refund else ""
        detail = f"in {delay:.3f}s{note}: {error}"
        trace(conn, [_trace_row(lease.item.id, now, lease.item.stage, RETRY_SCHEDULED, attempt, detail)])
    return ok


def park(conn: Connection, lease: Lease, *, error: str, now: datetime) -> bool:
    """Stop the item until an operator re-queues it; False when the lease was lost."""
    now = _utc(now)
    ok = _fenced(
        conn, lease, {"status": PARKED, "next_run_at": None, "last_error": _clip(error), "updated_at": now}
    )
    if ok:
        trace(
            conn, [_trace_row(lease.item.id, now, lease.item.stage, PARKED_EVENT, lease.item.attempt, error)]
        )
    return ok


def fail(conn: Connection, lease: Lease, *, reason: str, now: datetime) -> bool:
    """Stop the item for good with ``reason``; False when the lease was lost."""
    now = _utc(now)
    ok = _fenced(
        conn, lease, {"status": FAILED, "next_run_at": None, "last_error": _clip(reason), "updated_at": now}
    )
    if ok:
        trace(
            conn, [_trace_row(lease.item.id, now, lease.item.stage, FAILED_EVENT, lease.item.attempt, reason)]
        )
    return ok


def release(conn: Connection, lease: Lease, *, reason: str, now: datetime) -> bool:
    """Hand a claimed item back untouched, giving back the attempt its claim counted."""
    now = _utc(now)
    ok = _fenced(
        conn,
        lease,
        {"status": READY, "next_run_at": now, "updated_at": now},
        release=True,
    )
    if ok:
        trace(
            conn, [_trace_row(lease.item.id, now, lease.item.stage, RELEASED, lease.item.attempt - 1, reason)]
        )
    return ok


@dataclass(frozen=True)
class HeldRow:
    """A lease as the store has it: which item, under which token, at which stage and attempt."""

    id: str
    token: str
    stage: str
    attempts: int


def leased_by(conn: Connection, owner: str, stages: Sequence[tuple[str, str]]) -> list[HeldRow]:
    """The items of ``stages`` ((pipeline, stage) pairs) leased under ``owner``'s name."""
    if not stages:
        return []
    t = _items
    rows = conn.execute(
        select(t.c.id, t.c.lease_token, t.c.stage, t.c.attempts).where(
            t.c.status == LEASED,
            t.c.lease_owner == owner,
            or_(*(and_(t.c.pipeline == p, t.c.stage == s) for p, s in stages)),
        )
    )
    return [HeldRow(r.id, r.lease_token, r.stage, r.attempts) for r in rows]


def hand_back(conn: Connection, held: Sequence[HeldRow], *, reason: str, now: datetime) -> int:
    """Release leases known only from the store (fenced by their tokens), giving back the attempts their
    claims counted; returns how many were still held."""
    now = _utc(now)
    released = 0
    traces = []
    for row in held:
        result = conn.execute(
            _FENCED_RELEASE,
            {
                "_id": row.id,
                "_token": row.token,
                "status": READY,
                "next_run_at": now,
                "updated_at": now,
                "lease_owner": None,
                "lease_token": None,
                "lease_expires_at": None,
            },
        )
        if result.rowcount == 1:
            released += 1
            traces.append(_trace_row(row.id, now, row.stage, RELEASED, row.attempts - 1, reason))
    trace(conn, traces)
    return released


_RENEW = (
    update(_items)
    .where(*_FENCE)
    .values(lease_expires_at=bindparam("_expires"), next_run_at=bindparam("_expires"))
)


def renew(conn: Connection, leases: Sequence[Lease], expires_at: datetime) -> None:
    """Push the expiry of leases still held under their tokens to ``expires_at`` (a heartbeat); leases
    already taken over are left alone."""
    if leases:
        expires_at = _utc(expires_at)
        conn.execute(
            _RENEW,
            [{"_id": lease.item.id, "_token": lease.token, "_expires": expires_at} for lease in leases],
        )
