"""The one place where tranche's errors become HTTP statuses.

Every error body has the same shape: ``{"error": {"code", "message", "record"?, "field"?}}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from tranche.assessment.errors import (
    InvalidRiskRulesError,
    LoanError,
    RetryableServiceError,
    RiskRulesConflictError,
    TerminalServiceError,
)
from tranche.bus.errors import (
    BusClosedError,
    ChunkTooLargeError,
    NoResponderError,
    PublishError,
    RemoteError,
    RequestTimeoutError,
)
from tranche.ledger import OverdraftError, UnbalancedLedgerError
from tranche.matching.errors import (
    DuplicateOfferError,
    InvalidOfferError,
    OfferWithdrawnError,
    UnknownOfferError,
)
from tranche.pipeline.errors import InvalidStageOverrideError, ItemNotFoundError, ItemNotParkedError
from tranche.shared.errors import (
    ConflictError,
    CurrencyMismatchError,
    NotFoundError,
    TrancheError,
    ValidationError,
)
from tranche.store.ownership import OwnershipLostError
from tranche.trading.errors import PortfolioClosedError


class ErrorDetail(BaseModel):
    code: str
    message: str
    record: str | None = None
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error answer: what went wrong, naming the record and the field where it can."""

    error: ErrorDetail


_MEANING = {
    400: "the request cannot be read",
    401: "no valid API key",
    403: "the key lacks the scope this route needs",
    404: "an id in the request names nothing (or nothing this caller may see)",
    409: "the request contradicts what is stored",
    413: "the body is too large",
    422: "the request breaks a rule; the body names the field",
    429: "too many requests; see Retry-After",
    503: "a dependency is unavailable; see Retry-After",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` a route declares for the errors it can answer, each with the one error body."""
    return {status: {"model": ErrorBody, "description": _MEANING[status]} for status in statuses}


# Most specific class first: the first isinstance match wins.
STATUS_BY_ERROR: list[tuple[type[TrancheError], int]] = [
    (NotFoundError, 404),
    (InvalidRiskRulesError, 422),
    (LoanError, 422),
    (RiskRulesConflictError, 409),
    (RetryableServiceError, 503),
    (TerminalServiceError, 502),
    (ConflictError, 409),
    (ValidationError, 422),
    (CurrencyMismatchError, 422),
    (NoResponderError, 503),
    (BusClosedError, 503),
    (PublishError, 503),
    (RequestTimeoutError, 504),
    (RemoteError, 502),
    (ChunkTooLargeError, 502),
    (ItemNotFoundError, 404),
    (ItemNotParkedError, 409),
    (InvalidStageOverrideError, 422),
    (PortfolioClosedError, 409),
    (UnknownOfferError, 404),
    (DuplicateOfferError, 409),
    (OfferWithdrawnError, 409),
    (InvalidOfferError, 422),
    (OverdraftError, 409),
    (UnbalancedLedgerError, 500),
    (OwnershipLostError, 503),
]

STORE_RETRY_AFTER_SECONDS = 5
"""``Retry-After`` of a 503 while the store is away: about one reconnection pause."""


def status_for(error: TrancheError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 400


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TrancheError)
    async def _tranche_error(_request: Request, exc: TrancheError) -> JSONResponse:
        return JSONResponse({"error": exc.as_dict()}, status_code=status_for(exc))

    async def _store_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        if (
            isinstance(exc, DBAPIError)
            and not isinstance(exc, OperationalError | InterfaceError)
            and not exc.connection_invalidated
        ):
            raise exc
        # The driver's message can name hosts and statements: the client is told only what to do.
        body = {"code": "store_unavailable", "message": "the store is unreachable; try again shortly"}
        return JSONResponse(
            {"error": body}, status_code=503, headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)}
        )

    for unreachable in (OperationalError, InterfaceError, PoolTimeoutError, DBAPIError):
        app.add_exception_handler(unreachable, _store_unavailable)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for item in exc.errors():
            location = [str(part) for part in item.get("loc", ())]
            errors.append(
                {
                    "code": "invalid",
                    "message": item.get("msg", "invalid"),
                    "record": location[0] if location else None,
                    "field": ".".join(location[1:]) or None,
                }
            )
        first = errors[0] if errors else {"code": "invalid", "message": "invalid request"}
        return JSONResponse({"error": first, "errors": errors}, status_code=422)
