"""What operators and orchestrators ask every process: ``/health``, ``/ready`` and ``/metrics``.

- ``GET /health`` — liveness: the process answers. 200 always; restart the process only when this fails.
- ``GET /ready`` (and ``/v1/health``) — readiness: the store answers a query and the broker is connected; 503
  with ``Retry-After`` otherwise. The body names the process's roles and, for each singleton job it claims,
  whether it owns it (``owner``, with the epoch) or stands by (``standby``, with the owner it sees): a
  standby is ready.
- ``GET /metrics`` — Prometheus' text format: the process's own (outbox lag, consumers' backlog, ownership,
  pipeline stages, store and broker up) and what contexts registered (:mod:`tranche.shared.metrics`).

The API serves them beside ``/v1``; a worker without the API serves them alone on its ops port
(``TRANCHE_OPS_HOST``:``TRANCHE_OPS_PORT``), :func:`create_ops_app`.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from tranche import __version__
from tranche.bus.outbox import outbox_lag
from tranche.pipeline import stage_stats
from tranche.shared.metrics import CONTENT_TYPE, Metrics
from tranche.store.engine import reading

if TYPE_CHECKING:
    from tranche.bootstrap import Container

RETRY_AFTER_SECONDS = 5
"""What ``Retry-After`` says while the store or the broker is away: about one reconnection pause."""

_CHECK_TIMEOUT = 3.0

router = APIRouter(tags=["ops"])


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def _store_up(container: Container) -> bool:
    with reading(container.engine) as conn:
        conn.execute(text("SELECT 1"))
    return True


async def readiness(container: Container) -> tuple[bool, dict[str, Any]]:
    """Whether the process is ready, and the body that says why."""
    try:
        store = await asyncio.wait_for(asyncio.to_thread(_store_up, container), _CHECK_TIMEOUT)
    except Exception:
        store = False
    broker = container.bus.connected
    jobs = {
        state.job: {"state": state.state, "epoch": state.epoch, "owner": state.holder}
        for state in container.ownership.states()
    }
    ready = store and broker
    return ready, {
        "status": "ready" if ready else "unavailable",
        "version": __version__,
        "store": "ok" if store else "unreachable",
        "broker": "ok" if broker else "unreachable",
        "roles": sorted(container.settings.roles),
        "jobs": jobs,
    }


@router.get("/health")
def health(request: Request) -> dict[str, Any]:
    """Liveness: the process answers (nothing else is checked)."""
    return {"status": "ok", "version": __version__, "roles": sorted(_container(request).settings.roles)}


@router.get("/ready", responses={503: {"description": "the store or the broker is unreachable"}})
async def ready(request: Request) -> JSONResponse:
    """Readiness: the store and the broker are reachable; which singleton jobs this process owns."""
    is_ready, body = await readiness(_container(request))
    if is_ready:
        return JSONResponse(body)
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process."""
    container = _container(request)
    install_probes(container)
    return Response(await container.metrics.render(), media_type=CONTENT_TYPE)


def install_probes(container: Container) -> None:
    """Register the process's own probes (once per container)."""
    metrics: Metrics = container.metrics
    if metrics.registered("tranche_store_up"):
        return
    engine, bus, ownership = container.engine, container.bus, container.ownership

    def store_up() -> float:
        try:
            return float(_store_up(container))
        except Exception:
            return 0.0

    def lag() -> tuple[int, float]:
        with reading(engine) as conn:
            return outbox_lag(conn, datetime.now(UTC))

    last: list[Any] = [0.0, []]  # when the stages were read, and what was read: both probes share one read

    def read_stages() -> list[Any]:
        now = time.monotonic()
        if now - last[0] > 1.0:
            with reading(engine) as conn:
                last[1] = stage_stats(conn, pipelines=container.pipelines)
            last[0] = now
        return list(last[1])

    def stages() -> dict[tuple[str, ...], float]:
        found = read_stages()
        depths: dict[tuple[str, ...], float] = {}
        for s in found:
            for status in ("ready", "in_flight", "retry_wait", "parked", "failed"):
                depths[(s.pipeline, s.stage, status)] = getattr(s, status)
        return depths

    def stage_rates() -> dict[tuple[str, ...], float]:
        found = read_stages()
        return {(s.pipeline, s.stage): s.rate_per_second for s in found}

    async def backlog() -> dict[tuple[str, ...], float]:
        return {(queue,): float(n) for queue, n in (await bus.backlog()).items()}

    def owned() -> dict[tuple[str, ...], float]:
        return {(s.job,): float(s.state == "owner") for s in ownership.states()}

    def epochs() -> dict[tuple[str, ...], float]:
        return {(s.job,): float(s.epoch) for s in ownership.states() if s.epoch is not None}

    metrics.probe("tranche_store_up", "1 when the store answers a query", store_up)
    metrics.probe("tranche_broker_up", "1 when the bus is connected", lambda: float(bus.connected))
    metrics.probe("tranche_outbox_unpublished", "outbox rows waiting for the relay", lambda: lag()[0])
    metrics.probe(
        "tranche_outbox_lag_seconds",
        "how long the oldest unpublished outbox row has waited",
        lambda: lag()[1],
    )
    metrics.probe(
        "tranche_consumer_backlog_messages",
        "messages waiting in a consumed queue",
        backlog,
        labels=("queue",),
    )
    metrics.probe(
        "tranche_job_owned",
        "1 when this process owns the singleton job, 0 when it stands by",
        owned,
        labels=("job",),
    )
    metrics.probe(
        "tranche_job_epoch",
        "the job's fencing epoch as this process last saw it",
        epochs,
        labels=("job",),
    )
    ledger = container.ledger_reports
    metrics.probe(
        "tranche_ledger_batches", "transfer batches the ledger has written", lambda: ledger.activity().batches
    )
    metrics.probe(
        "tranche_ledger_transfers", "transfers the ledger has stored", lambda: ledger.activity().transfers
    )
    metrics.probe(
        "tranche_ledger_open_reservations",
        "reservations waiting for funding",
        lambda: ledger.activity().open_reservations,
    )
    metrics.probe(
        "tranche_stage_items",
        "pipeline items by stage and status",
        stages,
        labels=("pipeline", "stage", "status"),
    )
    metrics.probe(
        "tranche_stage_completed_per_second",
        "completions per second over the last minute",
        stage_rates,
        labels=("pipeline", "stage"),
    )


def create_ops_app(container: Container) -> FastAPI:
    """``/health``, ``/ready`` and ``/metrics`` alone, for a worker process without the API."""
    app = FastAPI(title="tranche ops", version=__version__, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.container = container
    app.include_router(router)
    install_probes(container)
    return app
