"""Investors' cash and what it bought: deposits, withdrawals, statements, holdings, returns; lenders' settlement.

Amounts travel as decimal strings in major units of their currency ("100.00"). A deposit or withdrawal carries
an idempotency key (the ``Idempotency-Key`` header or the body's ``key``): the same key twice is one movement,
and the same key with another amount is a 409.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tranche.api.app import container_of
from tranche.ledger import chart
from tranche.ledger.domain import Transfer
from tranche.ledger.reports import LedgerReports, Movement
from tranche.ledger.service import LedgerService
from tranche.shared.errors import ValidationError
from tranche.shared.money import Money, to_major

router = APIRouter(tags=["ledger"])


def ledger_of(request: Request) -> LedgerService:
    """The ledger service of the running process (a FastAPI dependency)."""
    return container_of(request).ledger


def reports_of(request: Request) -> LedgerReports:
    return container_of(request).ledger_reports


LedgerDep = Annotated[LedgerService, Depends(ledger_of)]
ReportsDep = Annotated[LedgerReports, Depends(reports_of)]


class CashIn(BaseModel):
    """A deposit or a withdrawal."""

    model_config = ConfigDict(extra="forbid")
    amount: Decimal = Field(description="major units, e.g. 100.00", gt=0)
    currency: str = Field(min_length=3, max_length=3)
    key: str | None = Field(
        None, max_length=100, description="idempotency key (or the Idempotency-Key header)"
    )


class CashOut(BaseModel):
    transfer_id: str
    investor_id: str
    amount: str
    currency: str
    available: str
    balance: str


def _key(body: CashIn, header: str | None) -> str:
    key = header or body.key
    if not key:
        raise ValidationError(
            "an idempotency key is required (Idempotency-Key header or body.key)", field="key"
        )
    return key


def _cash_out(service: LedgerService, investor_id: str, transfer: Transfer) -> CashOut:
    currency = transfer.currency
    account = service.store.account(chart.investor_cash(investor_id, currency).id)
    return CashOut(
        transfer_id=transfer.id,
        investor_id=investor_id,
        amount=str(to_major(transfer.amount or 0, currency)),
        currency=currency,
        available=str(to_major(account.available, currency)),
        balance=str(to_major(account.balance, currency)),
    )


@router.post("/investors/{investor_id}/deposits", status_code=201, response_model=CashOut)
def deposit(
    investor_id: str,
    body: CashIn,
    service: LedgerDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> CashOut:
    """Credit the investor's cash."""
    money = Money.parse(body.amount, body.currency)
    transfer = service.deposit(investor_id, money, _key(body, idempotency_key))
    return _cash_out(service, investor_id, transfer)


@router.post("/investors/{investor_id}/withdrawals", status_code=201, response_model=CashOut)
def withdraw(
    investor_id: str,
    body: CashIn,
    service: LedgerDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> CashOut:
    """Pay out of the investor's available cash; more than is available is refused (409, code ``overdraft``)."""
    money = Money.parse(body.amount, body.currency)
    transfer = service.withdraw(investor_id, money, _key(body, idempotency_key))
    return _cash_out(service, investor_id, transfer)


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


@router.get("/investors/{investor_id}/statement")
def statement(
    investor_id: str,
    reports: ReportsDep,
    currency: Annotated[str, Query(min_length=3, max_length=3)],
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> StreamingResponse:
    """Every movement of the investor's cash in ``[from, to)`` as NDJSON, streamed chunk by chunk: an
    ``opening`` line, one ``movement`` line each, and a ``closing`` line."""
    for moment, name in ((start, "from"), (end, "to")):
        if moment is not None and moment.tzinfo is None:
            raise ValidationError(f"{name} must carry a timezone", field=name)
    report = reports.statement(investor_id, currency, start, end)

    def lines() -> Iterator[str]:
        yield (
            json.dumps(
                {
                    "type": "opening",
                    "investor_id": investor_id,
                    "currency": currency,
                    "balance": str(to_major(report.opening, currency)),
                }
            )
            + "\n"
        )
        for chunk in report:
            yield "".join(json.dumps(_movement(m, currency)) + "\n" for m in chunk)
        yield json.dumps({"type": "closing", "balance": str(to_major(report.closing, currency))}) + "\n"

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


@router.get("/investors/{investor_id}/holdings", response_model=list[HoldingOut])
def holdings(investor_id: str, reports: ReportsDep) -> list[HoldingOut]:
    """Per loan: principal still held, principal invested, losses written off, and the loan's outstanding."""
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


@router.get("/investors/{investor_id}/return")
def net_return(
    investor_id: str,
    reports: ReportsDep,
    request: Request,
    currency: Annotated[str, Query(min_length=3, max_length=3)],
) -> dict[str, Any]:
    """Net annual return (XIRR of deposits, withdrawals and what is held now), as a fraction: "0.0712"."""
    as_of = container_of(request).clock.now()
    rate = reports.net_annual_return(investor_id, currency, as_of)
    return {
        "investor_id": investor_id,
        "currency": currency,
        "as_of": as_of.isoformat(),
        "xirr": None if rate is None else str(rate),
    }


@router.get("/lenders/{lender_id}/settlement")
def lender_settlement(
    lender_id: str, reports: ReportsDep, currency: Annotated[str, Query(min_length=3, max_length=3)]
) -> list[dict[str, Any]]:
    """The lender's settlement account per UTC day: funded, repaid, margin, payouts, closing balance."""
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
