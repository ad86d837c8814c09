"""Intake over HTTP: lenders upload tapes; operators follow batches and read loan versions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from tranche.api.app import container_of
from tranche.bootstrap import Container
from tranche.intake.service import tape_format

router = APIRouter(tags=["intake"])
ContainerDep = Annotated[Container, Depends(container_of)]


@router.post(
    "/lenders/{lender_id}/batches",
    status_code=202,
    summary="Upload a loan tape (BSON as mongodump writes it, or JSON Lines)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/bson": {"schema": {"type": "string", "format": "binary"}},
                "application/x-ndjson": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def upload_tape(lender_id: str, request: Request, container: ContainerDep) -> JSONResponse:
    """The body is streamed to the archive, never held in memory. The same bytes give the same batch (200)."""
    intake = container.intake
    fmt = tape_format(request.headers.get("content-type"))
    writer = await run_in_threadpool(intake.open_upload, lender_id, fmt)
    try:
        async for chunk in request.stream():
            if chunk:
                writer.write(chunk)
        tape = await run_in_threadpool(writer.finish)
    except BaseException:
        writer.abort()
        raise
    receipt = await run_in_threadpool(intake.register, lender_id, fmt, tape)
    container.wake_workers()
    body = {
        "batch_id": receipt.batch_id,
        "created": receipt.created,
        "status_url": f"/v1/batches/{receipt.batch_id}",
    }
    return JSONResponse(body, status_code=202 if receipt.created else 200)


@router.get("/batches/{batch_id}", summary="A batch's status and counts, while it runs and after")
def batch_status(batch_id: str, container: ContainerDep) -> dict[str, Any]:
    return container.intake.batch_status(batch_id)


@router.get("/batches/{batch_id}/errors", summary="Page through a batch's per-loan errors")
def batch_errors(
    batch_id: str,
    container: ContainerDep,
    after: Annotated[
        str | None, Query(pattern=r"^\d+:\d+$", description="the `next` cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    cursor = None if after is None else (int(after.split(":")[0]), int(after.split(":")[1]))
    errors = container.intake.batch_errors(batch_id, after=cursor, limit=limit)
    following = None
    if len(errors) == limit:
        last = errors[-1]
        following = f"/v1/batches/{batch_id}/errors?after={last['document']}:{last['error_id']}&limit={limit}"
    return {"errors": errors, "next": following}


@router.post("/batches/{batch_id}/replay", status_code=202, summary="Process a batch again from its archive")
def replay_batch(batch_id: str, container: ContainerDep, wipe: bool = False) -> dict[str, Any]:
    queued = container.intake.replay(batch_id, wipe=wipe)
    container.wake_workers()
    return {"queued": [{"batch_id": b, "run": r} for b, r in queued]}


@router.get(
    "/lenders/{lender_id}/loans/{loan_id}", summary="A loan's current version, or the one in force at as_of"
)
def loan(
    lender_id: str,
    loan_id: str,
    container: ContainerDep,
    as_of: Annotated[
        datetime | None, Query(description="ISO 8601 time; the version recorded last before it")
    ] = None,
) -> dict[str, Any]:
    return container.intake.loan(lender_id, loan_id, as_of=as_of)


@router.get("/lenders/{lender_id}/loans/{loan_id}/versions", summary="Every version of a loan, oldest first")
def loan_versions(lender_id: str, loan_id: str, container: ContainerDep) -> dict[str, Any]:
    return {"versions": container.intake.versions(lender_id, loan_id)}
