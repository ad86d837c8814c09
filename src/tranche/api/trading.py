"""Investors' portfolios: create, read (with composition against target), update, pause, resume and close.

Amounts travel as decimal strings in major units of the portfolio's currency ("1000.00"); weights,
tolerances and rates as decimal strings too (weights and tolerances in percent, rates as fractions: "0.07").

A change is stored at once and answered with the portfolio's new terms; the market role applies it (withdraws
the demand made under the old terms, plans under the new ones) when it receives the change's event, a moment
later, whichever process took the request. While the market role is down the change waits, durable, in the
outbox and the bus, and takes effect when the role comes back; the answer's ``state`` says what the portfolio is
doing now.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from tranche.api.app import container_of
from tranche.api.errors import error_responses
from tranche.api.params import InvestorId, PortfolioId
from tranche.crm import ensure_investor
from tranche.matching import Criteria
from tranche.shared.errors import ValidationError
from tranche.shared.money import Money, currency_code, to_major
from tranche.trading import (
    BucketDraft,
    InvalidPortfolioError,
    Portfolio,
    PortfolioDraft,
    PortfolioView,
    TradingService,
)

router = APIRouter(tags=["trading"])


def trading_of(request: Request) -> TradingService:
    """The trading service of the running process (a FastAPI dependency)."""
    return container_of(request).trading


TradingDep = Annotated[TradingService, Depends(trading_of)]


class RangeIn(BaseModel):
    """An inclusive range; either end may be left open."""

    model_config = ConfigDict(extra="forbid")
    min: int | None = None
    max: int | None = None


class CriteriaIn(BaseModel):
    """A bucket's criteria over the loan and its assessment. Every criterion left out accepts any loan."""

    model_config = ConfigDict(extra="forbid")
    countries: list[str] | None = Field(
        None, description="ISO 3166-1 alpha-2 codes of the borrower's country"
    )
    borrower_age: RangeIn | None = None
    credit_score: RangeIn | None = None
    min_monthly_income: Decimal | None = Field(None, description="major units of the portfolio's currency")
    risk_groups: list[str] | None = None
    term_months: RangeIn | None = None
    lenders_in: list[str] | None = None
    lenders_not_in: list[str] = Field(default_factory=list)
    min_investor_rate: Decimal = Field(Decimal(0), description="annual rate for the investor, e.g. 0.07")


class BucketIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    weight: Decimal = Field(description="target weight in percent; the buckets' weights sum to 100")
    criteria: CriteriaIn = Field(default_factory=CriteriaIn)


class PortfolioIn(BaseModel):
    """A portfolio's terms, to create it or to replace them."""

    model_config = ConfigDict(extra="forbid")
    currency: str = Field(min_length=3, max_length=3)
    total: Decimal = Field(description="amount to invest, major units")
    max_per_loan: Decimal
    min_ticket: Decimal
    buckets: list[BucketIn]
    tranche_percent: Decimal = Decimal(10)
    tolerance_percent: Decimal = Decimal(5)
    keep_uninvested: Decimal = Field(
        Decimal(0), description="cash (major units) that repayments and deposits leave uninvested"
    )


def _minor(value: Decimal, currency: str, field: str) -> int:
    try:
        return Money.parse(value, currency).amount
    except ValidationError as error:
        raise InvalidPortfolioError(error.message, field=field) from None


def _criteria(c: CriteriaIn, currency: str, where: str) -> Criteria:
    def bounds(r: RangeIn | None) -> tuple[int | None, int | None]:
        return (None, None) if r is None else (r.min, r.max)

    age, score, term = bounds(c.borrower_age), bounds(c.credit_score), bounds(c.term_months)
    income = None
    if c.min_monthly_income is not None:
        income = _minor(c.min_monthly_income, currency, f"{where}.criteria.min_monthly_income")
    return Criteria(
        countries=None if c.countries is None else frozenset(x.upper() for x in c.countries),
        age_min=age[0],
        age_max=age[1],
        score_min=score[0],
        score_max=score[1],
        income_min=income,
        risk_groups=None if c.risk_groups is None else frozenset(c.risk_groups),
        term_min=term[0],
        term_max=term[1],
        lenders_in=None if c.lenders_in is None else frozenset(c.lenders_in),
        lenders_not_in=frozenset(c.lenders_not_in),
        min_investor_rate=c.min_investor_rate,
    )


def draft_of(body: PortfolioIn) -> PortfolioDraft:
    """The domain's draft from the request body; amounts become minor units of the currency."""
    try:
        currency = currency_code(body.currency)
    except ValidationError as error:
        raise InvalidPortfolioError(error.message, field="currency") from None
    return PortfolioDraft(
        currency=currency,
        total=_minor(body.total, currency, "total"),
        max_per_loan=_minor(body.max_per_loan, currency, "max_per_loan"),
        min_ticket=_minor(body.min_ticket, currency, "min_ticket"),
        buckets=tuple(
            BucketDraft(b.name, b.weight, _criteria(b.criteria, currency, f"buckets[{i}]"))
            for i, b in enumerate(body.buckets)
        ),
        tranche_percent=body.tranche_percent,
        tolerance_percent=body.tolerance_percent,
        keep_uninvested=_minor(body.keep_uninvested, currency, "keep_uninvested"),
    )


def _criteria_view(c: Criteria, currency: str) -> dict[str, Any]:
    def rng(low: int | None, high: int | None) -> dict[str, int | None] | None:
        return None if low is None and high is None else {"min": low, "max": high}

    return {
        "countries": None if c.countries is None else sorted(c.countries),
        "borrower_age": rng(c.age_min, c.age_max),
        "credit_score": rng(c.score_min, c.score_max),
        "min_monthly_income": None if c.income_min is None else str(to_major(c.income_min, currency)),
        "risk_groups": None if c.risk_groups is None else sorted(c.risk_groups),
        "term_months": rng(c.term_min, c.term_max),
        "lenders_in": None if c.lenders_in is None else sorted(c.lenders_in),
        "lenders_not_in": sorted(c.lenders_not_in),
        "min_investor_rate": str(c.min_investor_rate),
    }


def portfolio_view(p: Portfolio) -> dict[str, Any]:
    def money(amount: int) -> str:
        return str(to_major(amount, p.currency))

    return {
        "portfolio_id": p.portfolio_id,
        "investor_id": p.investor_id,
        "status": p.status.value,
        "currency": p.currency,
        "total": money(p.total),
        "max_per_loan": money(p.max_per_loan),
        "min_ticket": money(p.min_ticket),
        "tranche_percent": str(p.tranche_percent),
        "tolerance_percent": str(p.tolerance_percent),
        "keep_uninvested": money(p.keep_uninvested),
        "cycle": p.cycle,
        "version": p.version,
        "buckets": [
            {
                "bucket_id": b.bucket_id,
                "name": b.name,
                "weight": str(b.weight),
                "criteria": _criteria_view(b.criteria, p.currency),
            }
            for b in p.buckets
        ],
    }


def full_view(view: PortfolioView) -> dict[str, Any]:
    p = view.portfolio
    body = portfolio_view(p)
    body["state"] = view.state
    body["available_cash"] = str(to_major(max(view.available_cash, 0), p.currency))
    body["composition"] = {
        "invested": str(to_major(view.invested, p.currency)),
        "wanted": str(to_major(view.wanted, p.currency)),
        "written_off": str(to_major(view.written_off, p.currency)),
        "within_tolerance": view.within_tolerance,
        "buckets": [
            {
                "bucket_id": row.bucket_id,
                "name": row.name,
                "target_percent": str(row.target_percent),
                "actual_percent": str(row.actual_percent),
                "held": str(to_major(row.held, p.currency)),
                "wanted": str(to_major(row.wanted, p.currency)),
                "written_off": str(to_major(row.written_off, p.currency)),
            }
            for row in view.buckets
        ],
    }
    return body


_NOT_FOUND = error_responses(404, 422)
_REFUSED = error_responses(404, 409, 422)


@router.post(
    "/investors/{investor_id}/portfolios", status_code=201, summary="Create a portfolio", responses=_REFUSED
)
def create_portfolio(investor_id: InvestorId, body: PortfolioIn, request: Request) -> dict[str, Any]:
    container = container_of(request)
    with container.engine.connect() as conn:
        ensure_investor(conn, investor_id)
    portfolio = container.trading.create(investor_id, draft_of(body))
    return full_view(container.trading.view(portfolio.portfolio_id))


@router.get("/investors/{investor_id}/portfolios", summary="An investor's portfolios", responses=_NOT_FOUND)
def list_portfolios(investor_id: InvestorId, request: Request) -> dict[str, Any]:
    container = container_of(request)
    with container.engine.connect() as conn:
        ensure_investor(conn, investor_id)
    return {
        "investor_id": investor_id,
        "portfolios": [portfolio_view(p) for p in container.trading.list_for(investor_id)],
    }


@router.get(
    "/portfolios/{portfolio_id}",
    summary="A portfolio with its composition against target",
    responses=_NOT_FOUND,
)
def read_portfolio(portfolio_id: PortfolioId, trading: TradingDep) -> dict[str, Any]:
    return full_view(trading.view(portfolio_id))


@router.put(
    "/portfolios/{portfolio_id}",
    summary="Replace a portfolio's terms (the market withdraws the demand made under the old ones)",
    responses=_REFUSED,
)
def update_portfolio(portfolio_id: PortfolioId, body: PortfolioIn, trading: TradingDep) -> dict[str, Any]:
    trading.update(portfolio_id, draft_of(body))
    return full_view(trading.view(portfolio_id))


@router.post("/portfolios/{portfolio_id}/pause", summary="Stop buying; holdings stay", responses=_REFUSED)
def pause_portfolio(portfolio_id: PortfolioId, trading: TradingDep) -> dict[str, Any]:
    trading.pause(portfolio_id)
    return full_view(trading.view(portfolio_id))


@router.post("/portfolios/{portfolio_id}/resume", summary="Buy again", responses=_REFUSED)
def resume_portfolio(portfolio_id: PortfolioId, trading: TradingDep) -> dict[str, Any]:
    trading.resume(portfolio_id)
    return full_view(trading.view(portfolio_id))


@router.post(
    "/portfolios/{portfolio_id}/close",
    summary="Close for good; holdings stay, nothing more is bought",
    responses=_REFUSED,
)
def close_portfolio(portfolio_id: PortfolioId, trading: TradingDep) -> dict[str, Any]:
    trading.close(portfolio_id)
    return full_view(trading.view(portfolio_id))


@router.get(
    "/portfolios/{portfolio_id}/buy-offers",
    summary="Every buy offer the portfolio's cycles issued",
    responses=_NOT_FOUND,
)
def portfolio_buy_offers(portfolio_id: PortfolioId, trading: TradingDep) -> dict[str, Any]:
    portfolio = trading.get(portfolio_id)
    return {
        "portfolio_id": portfolio_id,
        "buy_offers": [
            {
                "buy_offer_id": o.buy_offer_id,
                "bucket_id": o.bucket_id,
                "cycle": o.cycle,
                "portfolio_version": o.portfolio_version,
                "amount": str(to_major(o.amount, portfolio.currency)),
                "status": o.status,
            }
            for o in trading.store.offers(portfolio_id)
        ],
    }
