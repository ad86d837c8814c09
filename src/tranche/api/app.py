"""The HTTP API: one FastAPI app under ``/v1``, one router per bounded context."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from tranche import __version__
from tranche.api.errors import install_error_handlers

if TYPE_CHECKING:
    from tranche.bootstrap import Container


def container_of(request: Request) -> Container:
    """The composition root's objects, for route handlers (as a FastAPI dependency)."""
    container: Container = request.app.state.container
    return container


def create_app(container: Container) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await container.start_messaging()
        try:
            yield
        finally:
            await container.stop_messaging()

    app = FastAPI(
        lifespan=lifespan,
        title="tranche",
        version=__version__,
        description="Marketplace engine where loan originators sell fractions of their loans to investors.",
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
    )
    app.state.container = container
    install_error_handlers(app)

    from tranche.api import ops

    app.include_router(ops.router)

    @app.get("/v1/health", tags=["ops"], responses={503: {"description": "the store or the broker is away"}})
    async def health() -> JSONResponse:
        """Readiness, as ``/ready``: 503 with ``Retry-After`` while the store or the broker is unreachable."""
        ready, body = await ops.readiness(container)
        if ready:
            return JSONResponse(body)
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(ops.RETRY_AFTER_SECONDS)})

    for router in _routers():
        app.include_router(router, prefix="/v1")
    return app


def _routers() -> list[APIRouter]:
    """Each bounded context's router, imported here so that the app is assembled in one place."""
    from tranche.api import assessment, intake, investors, ledger, lenders, market, pipeline, trading

    return [
        lenders.router,
        investors.router,
        intake.router,
        assessment.router,
        pipeline.router,
        trading.router,
        market.router,
        ledger.router,
    ]
