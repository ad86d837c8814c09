"""The market's invariants, checked from the durable state of matching, trading and the ledger.

For one currency:

- **sold is funded**: for every loan, what the matcher confirmed equals what the ledger funded (posted, or still
  pending between the confirmation and the ledger's posting of it, shown apart as ``settling``);
- **sold within offered**: no sell offer had more confirmed than it offered;
- **all or nothing**: an all-or-nothing offer is sold 0 % or 100 %;
- **held is the ledger's**: what trading shows as a portfolio's holdings is what the ledger holds for it, at the
  principal still outstanding;
- **the ledger balances**: every currency's accounts sum to zero, posted and pending.

:func:`evaluate` is pure: it takes the figures and returns each check with its figures and the first failures;
the tests call it after every step, and ``GET /v1/market/{currency}/checks`` on a live system.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from tranche.ledger import LedgerReports
from tranche.matching import offer_sales
from tranche.store.engine import reading
from tranche.trading.service import TradingService

LoanKey = tuple[str, str]  # (lender id, loan id)
_SHOWN = 20  # failures listed per check


@dataclass(frozen=True, slots=True)
class SoldOffer:
    """One sell offer: what it offered and what was confirmed on it."""

    offer_id: str
    lender_id: str
    loan_id: str
    amount: int
    confirmed: int
    all_or_nothing: bool


@dataclass(frozen=True, slots=True)
class MarketState:
    """The figures the checks compare, for one currency (minor units)."""

    currency: str
    offers: Sequence[SoldOffer]
    funded: Mapping[LoanKey, int]  # the ledger: funding posted per loan
    settling: Mapping[LoanKey, int]  # the ledger: funding still pending for confirmed bids, per loan
    shown_held: Mapping[str, int]  # trading: what each portfolio shows as held
    ledger_held: Mapping[str, int]  # the ledger: principal each portfolio still holds
    ledger_net_posted: int
    ledger_net_pending: int


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    figures: dict[str, Any]
    failures: list[dict[str, Any]] = field(default_factory=list)


def evaluate(state: MarketState) -> list[Check]:
    return [
        _sold_is_funded(state),
        _sold_within_offered(state),
        _all_or_nothing(state),
        _held_is_the_ledgers(state),
        Check(
            "the_ledger_balances",
            state.ledger_net_posted == 0 and state.ledger_net_pending == 0,
            {"net_posted": state.ledger_net_posted, "net_pending": state.ledger_net_pending},
        ),
    ]


def _sold_is_funded(state: MarketState) -> Check:
    confirmed: dict[LoanKey, int] = {}
    for offer in state.offers:
        key = (offer.lender_id, offer.loan_id)
        confirmed[key] = confirmed.get(key, 0) + offer.confirmed
    failures = []
    for key in sorted(set(confirmed) | set(state.funded) | set(state.settling)):
        sold = confirmed.get(key, 0)
        funded = state.funded.get(key, 0)
        settling = state.settling.get(key, 0)
        if sold != funded + settling:
            failures.append(
                {
                    "lender_id": key[0],
                    "loan_id": key[1],
                    "confirmed": sold,
                    "funded": funded,
                    "settling": settling,
                }
            )
    return Check(
        "sold_is_funded",
        not failures,
        {
            "loans": len(confirmed),
            "confirmed": sum(confirmed.values()),
            "funded": sum(state.funded.values()),
            "settling": sum(state.settling.values()),
            "failing": len(failures),
        },
        failures[:_SHOWN],
    )


def _sold_within_offered(state: MarketState) -> Check:
    failures = [
        {"offer_id": o.offer_id, "offered": o.amount, "confirmed": o.confirmed}
        for o in state.offers
        if o.confirmed > o.amount
    ]
    return Check(
        "sold_within_offered",
        not failures,
        {
            "offers": len(state.offers),
            "offered": sum(o.amount for o in state.offers),
            "failing": len(failures),
        },
        failures[:_SHOWN],
    )


def _all_or_nothing(state: MarketState) -> Check:
    whole = [o for o in state.offers if o.all_or_nothing]
    failures = [
        {"offer_id": o.offer_id, "offered": o.amount, "confirmed": o.confirmed}
        for o in whole
        if o.confirmed not in (0, o.amount)
    ]
    return Check(
        "all_or_nothing",
        not failures,
        {
            "offers": len(whole),
            "sold_whole": sum(1 for o in whole if o.confirmed == o.amount and o.amount),
            "unsold": sum(1 for o in whole if o.confirmed == 0),
            "failing": len(failures),
        },
        failures[:_SHOWN],
    )


def _held_is_the_ledgers(state: MarketState) -> Check:
    failures = []
    for portfolio_id in sorted(set(state.shown_held) | set(state.ledger_held)):
        shown = state.shown_held.get(portfolio_id, 0)
        ledger = state.ledger_held.get(portfolio_id, 0)
        if shown != ledger:
            failures.append({"portfolio_id": portfolio_id, "trading_shows": shown, "ledger_holds": ledger})
    return Check(
        "held_is_the_ledgers",
        not failures,
        {
            "portfolios": len(set(state.shown_held) | set(state.ledger_held)),
            "held": sum(state.ledger_held.values()),
            "failing": len(failures),
        },
        failures[:_SHOWN],
    )


def market_state(
    conn: Connection, currency: str, trading: TradingService, ledger: LedgerReports
) -> MarketState:
    """Read the figures of one currency's checks: matching's record, trading's views, the ledger's positions."""
    offers = [
        SoldOffer(o.offer_id, o.lender_id, o.loan_id, o.amount, o.confirmed, o.all_or_nothing)
        for o in offer_sales(conn, currency)
    ]
    positions = ledger.market_positions(currency)
    shown: dict[str, int] = {}
    for portfolio_id in trading.store.ids_in(currency):
        invested = trading.view(portfolio_id).invested
        if invested:
            shown[portfolio_id] = invested
    return MarketState(
        currency,
        offers,
        positions.funded,
        positions.settling,
        shown,
        positions.held,
        positions.net_posted,
        positions.net_pending,
    )


def market_checks(
    engine: Engine, trading: TradingService, ledger: LedgerReports, currency: str
) -> list[Check]:
    """Every invariant of one currency's market, with its figures (see the module docstring)."""
    with reading(engine) as conn:
        state = market_state(conn, currency, trading, ledger)
    return evaluate(state)
