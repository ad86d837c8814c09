"""Investors' cash and what it bought: deposits, withdrawals, statements, holdings, returns; lenders' settlement.

Amounts travel as decimal strings in major units of their currency ("100.00"); a currency is an ISO 4217 code,
in either case. A deposit or withdrawal carries an idempotency key (the ``Idempotency-Key`` header or the body's
``key``; both must agree): the same key twice is one movement, and the same key with another amount is a 409.
Every route answers 404 for an investor or a lender that is not registered, and a refused request changes
nothing (no movement, no account).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tranche.api.app import container_of
from tranche.api.errors import error_responses
from tranche.api.params import Currency, InvestorId, LenderId
from tranche.bootstrap import Container
from tranche.crm import ensure_investor, ensure_lender
from tranche.ledger import (
    MAX_AMOUNT,
    AmountOverflowError,
    CashMovement,
    LedgerReports,
    LedgerService,
    Movement,
    ReadStatement,
    request_statement,
)
from tranche.shared.errors import ValidationError
from tranche.shared.money import Money, minor_exponent, to_major

router = APIRouter(tags=["ledger"])

ContainerDep = Annotated[Container, Depends(container_of)]


def ledger_of(request: Request) -> LedgerService:
    """The ledger service of the running process (a FastAPI dependency)."""
    return container_of(request).ledger


def reports_of(request: Request) -> LedgerReports:
    return container_of(request).ledger_reports


LedgerDep = Annotated[LedgerService, Depends(ledger_of)]
ReportsDep = Annotated[LedgerReports, Depends(reports_of)]
CurrencyQuery = Annotated[Currency, Query()]


class CashIn(BaseModel):
    """A deposit or a withdrawal."""

    model_config = ConfigDict(extra="forbid")
    amount: Decimal = Field(description="major units, e.g. 100.00", gt=0)
    currency: Currency
    key: str | None = Field(
        None, min_length=1, max_length=100, description="idempotency key (or the Idempotency-Key header)"
    )


class CashOut(BaseModel):
    transfer_id: str
    investor_id: str
    amount: str
    currency: str
    available: str
    balance: str


def _key(body: CashIn, header: str | None) -> str:
    if header is not None and body.key is not None and header != body.key:
        raise ValidationError(
            f"the Idempotency-Key header ({header!r}) and the body's key ({body.key!r}) differ; send one, or the "
            "same in both",
            field="key",
        )
    key = header or body.key
    if not key:
        raise ValidationError(
            "an idempotency key is required (Idempotency-Key header or body.key)", field="key"
        )
    return key


def _money(body: CashIn, investor_id: str) -> Money:
    # The exponent first: scaling "1e999999999" would overflow the decimal context before it could be compared.
    amount = body.amount
    if amount.adjusted() > len(str(MAX_AMOUNT)) or amount.scaleb(minor_exponent(body.currency)) > MAX_AMOUNT:
        raise AmountOverflowError(
            f"{body.amount} {body.currency} is more than the ledger keeps ({to_major(MAX_AMOUNT, body.currency)})",
            record=investor_id,
            field="amount",
        )
    try:
        return Money.parse(body.amount, body.currency)
    except ValidationError as error:  # more decimals than the currency has
        raise ValidationError(error.message, record=investor_id, field="amount") from None


def _registered_investor(container: Container, investor_id: str) -> None:
    with container.engine.connect() as conn:
        ensure_investor(conn, investor_id)


def _cash_out(movement: CashMovement) -> CashOut:
    currency = movement.currency
    return CashOut(
        transfer_id=movement.transfer_id,
        investor_id=movement.investor_id,
        amount=str(to_major(movement.amount, currency)),
        currency=currency,
        available=str(to_major(movement.available, currency)),
        balance=str(to_major(movement.balance, currency)),
    )


_CASH_ERRORS = error_responses(404, 409, 422)


@router.post(
    "/investors/{investor_id}/deposits", status_code=201, response_model=CashOut, responses=_CASH_ERRORS
)
def deposit(
    investor_id: InvestorId,
    body: CashIn,
    service: LedgerDep,
    container: ContainerDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=100)] = None,
) -> CashOut:
    """Credit the investor's cash. Answered once the deposit is on disk."""
    key = _key(body, idempotency_key)
    _registered_investor(container, investor_id)
    return _cash_out(service.deposit(investor_id, _money(body, investor_id), key))


@router.post(
    "/investors/{investor_id}/withdrawals", status_code=201, response_model=CashOut, responses=_CASH_ERRORS
)
def withdraw(
    investor_id: InvestorId,
    body: CashIn,
    service: LedgerDep,
    container: ContainerDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=100)] = None,
) -> CashOut:
    """Pay out of the investor's available cash; more than is available is refused (409, code
    ``insufficient_cash``). Answered once the withdrawal is on disk."""
    key = _key(body, idempotency_key)
    _registered_investor(container, investor_id)
    return _cash_out(service.withdraw(investor_id, _money(body, investor_id), key))


def _movement(m: Movement, currency: str) -> dict[str, Any]:
    return {
        "type": "movement",
        "seq": m.seq,
        "transfer_id": m.transfer_id,
        "at": m.at.isoformat(),
        "code": m.code,
        "ref": m.ref,
        "amount": str(to_major(m.amount, currency)),
        "balance": str(to_major(m.balance, currency)),
    }


def _line(value: dict[str, Any]) -> str:
    return json.dumps(value) + "\n"


@router.get(
    "/investors/{investor_id}/statement",
    responses=error_responses(404, 422, 503),
)
async def statement(
    investor_id: InvestorId,
    container: ContainerDep,
    currency: CurrencyQuery,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> StreamingResponse:
    """Every movement of the investor's cash in ``[from, to)`` as NDJSON, streamed part by part from the ledger
    role: an ``opening`` line, one ``movement`` line each, and a ``closing`` line."""
    for moment, name in ((start, "from"), (end, "to")):
        if moment is not None and moment.tzinfo is None:
            raise ValidationError(f"{name} must carry a timezone", field=name)
    await run_in_threadpool(_registered_investor, container, investor_id)
    parts = request_statement(
        container.bus, container.codec, ReadStatement(investor_id, currency, start, end), timeout=30.0
    )
    first = await anext(
        parts
    )  # before the status line: a ledger role that does not answer is a 503, not a 200

    async def lines() -> AsyncIterator[str]:
        part = first
        opening = {"type": "opening", "investor_id": investor_id, "currency": currency}
        yield _line({**opening, "balance": str(to_major(part.opening or 0, currency))})
        while True:
            if part.movements:
                yield "".join(_line(_movement(m, currency)) for m in part.movements)
            if part.closing is not None:
                yield _line({"type": "closing", "balance": str(to_major(part.closing, currency))})
                return
            part = await anext(parts)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


class HoldingOut(BaseModel):
    lender_id: str
    loan_id: str
    currency: str
    held_principal: str
    invested: str
    written_off: str
    bids: int
    loan_status: str
    loan_outstanding_principal: str | None


@router.get(
    "/investors/{investor_id}/holdings",
    response_model=list[HoldingOut],
    responses=error_responses(404),
)
def holdings(investor_id: InvestorId, reports: ReportsDep, container: ContainerDep) -> list[HoldingOut]:
    """Per loan: principal still held, principal invested, losses written off, and the loan's outstanding."""
    _registered_investor(container, investor_id)
    return [
        HoldingOut(
            lender_id=h.lender_id,
            loan_id=h.loan_id,
            currency=h.currency,
            held_principal=str(to_major(h.held_principal, h.currency)),
            invested=str(to_major(h.invested, h.currency)),
            written_off=str(to_major(h.written_off, h.currency)),
            bids=h.bids,
            loan_status=h.loan_status,
            loan_outstanding_principal=None
            if h.loan_outstanding_principal is None
            else str(to_major(h.loan_outstanding_principal, h.currency)),
        )
        for h in reports.holdings(investor_id)
    ]


@router.get("/investors/{investor_id}/return", responses=error_responses(404, 422))
def net_return(
    investor_id: InvestorId, reports: ReportsDep, container: ContainerDep, currency: CurrencyQuery
) -> dict[str, Any]:
    """Net annual return (XIRR of deposits, withdrawals and what is held now; written-off principal is lost), as
    a fraction: "0.0712"; null before the first deposit."""
    _registered_investor(container, investor_id)
    as_of = container.clock.now()
    rate = reports.net_annual_return(investor_id, currency, as_of)
    return {
        "investor_id": investor_id,
        "currency": currency,
        "as_of": as_of.isoformat(),
        "xirr": None if rate is None else str(rate),
    }


@router.get("/lenders/{lender_id}/settlement", responses=error_responses(404, 422))
def lender_settlement(
    lender_id: LenderId, reports: ReportsDep, container: ContainerDep, currency: CurrencyQuery
) -> list[dict[str, Any]]:
    """The lender's settlement account per UTC day: funded, repaid, margin, payouts, closing balance."""
    with container.engine.connect() as conn:
        ensure_lender(conn, lender_id)
    rows = []
    for day in reports.lender_settlement(lender_id, currency):
        row: dict[str, Any] = {"day": day.day.isoformat()}
        for name in (
            "funded",
            "principal_paid",
            "interest_paid",
            "margin",
            "payouts",
            "received",
            "net",
            "closing",
        ):
            row[name] = str(to_major(getattr(day, name), currency))
        rows.append(row)
    return rows
