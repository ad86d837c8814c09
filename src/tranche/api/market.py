"""The market as operators, lenders and investors see it: open supply and demand per currency, and the story of
one loan (offered, sold, to whom at what investor rate, or refused and why).

Every figure is read from the durable record, so any API process answers, whichever process holds the books.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from tranche.api.app import container_of
from tranche.api.errors import error_responses
from tranche.api.params import LenderId
from tranche.bootstrap import Container
from tranche.crm import ensure_lender
from tranche.matching import loan_on_market, market_figures
from tranche.shared.money import currency_code, to_major
from tranche.store.engine import reading
from tranche.trading import market_checks

router = APIRouter(tags=["market"])
ContainerDep = Annotated[Container, Depends(container_of)]
Currency = Annotated[str, Path(min_length=3, max_length=3, description="ISO 4217 code, e.g. EUR")]


@router.get(
    "/market/{currency}", summary="Open supply and demand, and the fill rate", responses=error_responses(422)
)
def market(currency: Currency, container: ContainerDep) -> dict[str, Any]:
    code = currency_code(currency)
    with reading(container.engine) as conn:
        figures = market_figures(conn, code)

    def money(amount: int) -> str:
        return str(to_major(amount, code))

    return {
        "currency": code,
        "supply": {"offers": figures.open_offers, "amount": money(figures.open_supply)},
        "demand": {"buy_offers": figures.open_buy_offers, "amount": money(figures.open_demand)},
        "offered": money(figures.offered),
        "sold": money(figures.sold),
        "waiting_for_the_ledger": money(figures.placed),
        "fill_rate": str(figures.fill_rate),
    }


@router.get(
    "/lenders/{lender_id}/loans/{loan_id}/market",
    summary="A loan on the market: each version offered, each sale (to whom, at what investor rate), refusals",
    responses=error_responses(404, 422),
)
def loan_market(lender_id: LenderId, loan_id: str, container: ContainerDep) -> dict[str, Any]:
    with reading(container.engine) as conn:
        ensure_lender(conn, lender_id)
        story = loan_on_market(conn, lender_id, loan_id)
    currency = story.offers[-1].currency if story.offers else None

    def money(amount: int) -> str:
        return str(to_major(amount, currency)) if currency else str(amount)

    return {
        "lender_id": lender_id,
        "loan_id": loan_id,
        "state": story.state,
        "currency": currency,
        "offers": [
            {
                "offer_id": o.offer_id,
                "loan_version": o.loan_version,
                "offered": money(o.amount),
                "sold": money(o.sold),
                "lender_rate": str(o.lender_rate),
                "investor_rate": str(o.lender_rate - o.margin),
                "all_or_nothing": o.all_or_nothing,
                "status": o.status,
            }
            for o in story.offers
        ],
        "sales": [
            {
                "bid_id": s.bid_id,
                "loan_version": s.loan_version,
                "portfolio_id": s.portfolio_id,
                "investor_id": s.investor_id,
                "amount": money(s.amount),
                "investor_rate": str(s.investor_rate),
                "status": s.status,
            }
            for s in story.sales
        ],
        "refusals": [
            {
                "loan_version": r.loan_version,
                "field": r.field,
                "reason": r.reason,
                "refused_at": r.refused_at.isoformat(),
            }
            for r in story.refusals
        ],
    }


@router.get(
    "/market/{currency}/checks",
    summary="The market's invariants with their figures: sold is funded, within offered, all-or-nothing, held "
    "is the ledger's, the ledger balances",
    responses=error_responses(422),
)
def checks(currency: Currency, container: ContainerDep) -> dict[str, Any]:
    code = currency_code(currency)
    found = market_checks(container.engine, container.trading, container.ledger_reports, code)
    return {
        "currency": code,
        "ok": all(c.ok for c in found),
        "checks": [{"name": c.name, "ok": c.ok, "figures": c.figures, "failures": c.failures} for c in found],
    }
