"""Trading's commands: portfolios' life cycle, the gap analyzer's cycles, and what the matcher reports."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from tranche.matching.book import BuyOffer, Event
from tranche.matching.criteria import Criteria
from tranche.matching.events import BidsRolledBack, LoanFunded, OfferMatched
from tranche.shared.clock import Clock
from tranche.shared.ids import new_id
from tranche.trading.domain import (
    Bucket,
    BucketComposition,
    BucketPosition,
    Portfolio,
    PortfolioStatus,
    composition,
    plan_cycle,
    positions,
    validate,
    within_tolerance,
)
from tranche.trading.errors import InvalidPortfolioError, PortfolioClosedError
from tranche.trading.store import FillRow, OfferRow, PortfolioStore


@dataclass(frozen=True, slots=True)
class BucketDraft:
    """A bucket as the investor describes it."""

    name: str
    weight: Decimal  # percent
    criteria: Criteria


@dataclass(frozen=True, slots=True)
class PortfolioDraft:
    """A portfolio as the investor describes it (to create it, or to replace its terms)."""

    currency: str
    total: int
    max_per_loan: int
    min_ticket: int
    buckets: tuple[BucketDraft, ...]
    tranche_percent: Decimal = Decimal(10)
    tolerance_percent: Decimal = Decimal(5)


@dataclass(frozen=True, slots=True)
class PortfolioView:
    """A portfolio with its composition against target."""

    portfolio: Portfolio
    buckets: tuple[BucketComposition, ...]
    invested: int
    wanted: int
    within_tolerance: bool


@dataclass(frozen=True, slots=True)
class Change:
    """A portfolio after a command, and the buy offers the matcher must withdraw because of it."""

    portfolio: Portfolio
    withdraw: tuple[str, ...] = ()


class TradingService:
    """Portfolios and the gap analyzer over a :class:`PortfolioStore`."""

    def __init__(self, store: PortfolioStore, clock: Clock, ids: Callable[[str], str] = new_id) -> None:
        self.store = store
        self.clock = clock
        self.ids = ids

    # ------------------------------------------------------------------ portfolios

    def create(self, investor_id: str, draft: PortfolioDraft) -> Portfolio:
        portfolio_id = self.ids("pf")
        portfolio = validate(
            Portfolio(
                portfolio_id,
                investor_id,
                draft.currency,
                draft.total,
                draft.max_per_loan,
                draft.min_ticket,
                tuple(Bucket(self.ids("bkt"), b.name, b.weight, b.criteria) for b in draft.buckets),
                tranche_percent=draft.tranche_percent,
                tolerance_percent=draft.tolerance_percent,
            )
        )
        self.store.add(portfolio, self.clock.now())
        return portfolio

    def get(self, portfolio_id: str) -> Portfolio:
        return self.store.get(portfolio_id)

    def list_for(self, investor_id: str) -> list[Portfolio]:
        return self.store.list_for(investor_id)

    def update(self, portfolio_id: str, draft: PortfolioDraft) -> Change:
        """New terms: the open buy offers (made under the old terms) are withdrawn; a bucket keeps its id
        (and its holdings) when its name is kept."""
        old = self._open(portfolio_id)
        ids_by_name = {b.name: b.bucket_id for b in old.buckets}
        portfolio = validate(
            replace(
                old,
                currency=draft.currency,
                total=draft.total,
                max_per_loan=draft.max_per_loan,
                min_ticket=draft.min_ticket,
                buckets=tuple(
                    Bucket(ids_by_name.get(b.name) or self.ids("bkt"), b.name, b.weight, b.criteria)
                    for b in draft.buckets
                ),
                tranche_percent=draft.tranche_percent,
                tolerance_percent=draft.tolerance_percent,
                version=old.version + 1,
            )
        )
        if portfolio.currency != old.currency and any(p.held for p in self.positions(old).values()):
            raise InvalidPortfolioError(
                "the currency cannot change once the portfolio holds loans",
                record=portfolio_id,
                field="currency",
            )
        withdrawn = self._withdraw_open(portfolio_id)
        self.store.replace(portfolio, self.clock.now())
        return Change(portfolio, withdrawn)

    def pause(self, portfolio_id: str) -> Change:
        """Stop buying: open buy offers are withdrawn; holdings stay."""
        portfolio = replace(self._open(portfolio_id), status=PortfolioStatus.PAUSED)
        withdrawn = self._withdraw_open(portfolio_id)
        self.store.replace(portfolio, self.clock.now())
        return Change(portfolio, withdrawn)

    def resume(self, portfolio_id: str) -> Change:
        portfolio = replace(self._open(portfolio_id), status=PortfolioStatus.ACTIVE)
        self.store.replace(portfolio, self.clock.now())
        return Change(portfolio)

    def close(self, portfolio_id: str) -> Change:
        """Close for good: open buy offers are withdrawn; the portfolio can be read but never changed."""
        portfolio = replace(self._open(portfolio_id), status=PortfolioStatus.CLOSED)
        withdrawn = self._withdraw_open(portfolio_id)
        self.store.replace(portfolio, self.clock.now())
        return Change(portfolio, withdrawn)

    def positions(self, portfolio: Portfolio) -> dict[str, BucketPosition]:
        pid = portfolio.portfolio_id
        return positions(portfolio, self.store.offers(pid), self.store.fills(pid))

    def view(self, portfolio_id: str) -> PortfolioView:
        portfolio = self.store.get(portfolio_id)
        pos = self.positions(portfolio)
        return PortfolioView(
            portfolio,
            tuple(composition(portfolio, pos)),
            sum(p.held for p in pos.values()),
            sum(p.wanted for p in pos.values()),
            within_tolerance(portfolio, pos),
        )

    # ------------------------------------------------------------------ the gap analyzer

    def plan(self, portfolio_id: str) -> list[BuyOffer]:
        """One cycle of the gap analyzer for one portfolio: the buy offers to place (already recorded)."""
        portfolio = self.store.get(portfolio_id)
        intents = plan_cycle(portfolio, self.positions(portfolio))
        if not intents:
            return []
        cycle = portfolio.cycle + 1
        offers = [
            BuyOffer(
                self.ids("bo"),
                portfolio.portfolio_id,
                portfolio.investor_id,
                intent.bucket_id,
                cycle,
                portfolio.currency,
                intent.amount,
                portfolio.min_ticket,
                portfolio.max_per_loan,
                portfolio.bucket(intent.bucket_id).criteria,
            )
            for intent in intents
        ]
        now = self.clock.now()
        self.store.add_offers(
            [
                OfferRow(o.buy_offer_id, o.portfolio_id, portfolio.version, o.bucket_id, cycle, o.amount)
                for o in offers
            ],
            now,
        )
        self.store.replace(replace(portfolio, cycle=cycle), now)
        return offers

    def plan_all(self, portfolio_ids: Iterable[str] | None = None) -> list[BuyOffer]:
        """A cycle for every active portfolio (or for those named)."""
        ids = self.store.active_ids() if portfolio_ids is None else sorted(set(portfolio_ids))
        offers: list[BuyOffer] = []
        for portfolio_id in ids:
            offers += self.plan(portfolio_id)
        return offers

    def open_buy_offers(self) -> list[BuyOffer]:
        """Every buy offer of an active portfolio that trading holds open, as it was issued (edits withdraw
        open offers, so an open offer always belongs to its portfolio's current terms)."""
        offers: list[BuyOffer] = []
        for portfolio_id in self.store.active_ids():
            portfolio = self.store.get(portfolio_id)
            for row in self.store.offers(portfolio_id):
                if row.status == "open" and row.portfolio_version == portfolio.version:
                    offers.append(
                        BuyOffer(
                            row.buy_offer_id,
                            portfolio_id,
                            portfolio.investor_id,
                            row.bucket_id,
                            row.cycle,
                            portfolio.currency,
                            row.amount,
                            portfolio.min_ticket,
                            portfolio.max_per_loan,
                            portfolio.bucket(row.bucket_id).criteria,
                        )
                    )
        return offers

    def apply(self, events: Sequence[Event]) -> set[str]:
        """Record what the matcher did to trading's buy offers; returns the portfolios touched."""
        touched: set[str] = set()
        for event in events:
            if isinstance(event, OfferMatched):
                owners = self.store.owners(bid.buy_offer_id for bid in event.bids)
                rows = [
                    FillRow(
                        bid.bid_id,
                        bid.buy_offer_id,
                        owners[bid.buy_offer_id].portfolio_id,
                        owners[bid.buy_offer_id].bucket_id,
                        bid.amount,
                    )
                    for bid in event.bids
                    if bid.buy_offer_id in owners
                ]
                self.store.add_fills(rows)
                touched.update(r.portfolio_id for r in rows)
            elif isinstance(event, LoanFunded):
                touched |= self.store.set_fill_status(event.bid_ids, "confirmed")
            elif isinstance(event, BidsRolledBack):
                touched |= self.store.set_fill_status(event.bid_ids, "rolled_back")
        return touched

    # ------------------------------------------------------------------ internals

    def _open(self, portfolio_id: str) -> Portfolio:
        portfolio = self.store.get(portfolio_id)
        if portfolio.status is PortfolioStatus.CLOSED:
            raise PortfolioClosedError(
                f"portfolio {portfolio_id} is closed", record=portfolio_id, field="status"
            )
        return portfolio

    def _withdraw_open(self, portfolio_id: str) -> tuple[str, ...]:
        ids = tuple(o.buy_offer_id for o in self.store.offers(portfolio_id) if o.status == "open")
        self.store.set_offer_status(ids, "withdrawn")
        return ids
