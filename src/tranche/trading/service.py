"""Trading's commands: portfolios' life cycle, the gap analyzer's cycles, and what the matcher reports."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Protocol

from tranche.matching import BidsRolledBack, BuyOffer, Criteria, LoanFunded, MatchEvent, OfferMatched
from tranche.shared.clock import Clock
from tranche.shared.ids import new_id
from tranche.trading.domain import (
    Bucket,
    BucketComposition,
    BucketPosition,
    HeldPrincipal,
    Portfolio,
    PortfolioStatus,
    composition,
    plan_cycle,
    positions,
    validate,
    within_tolerance,
)
from tranche.trading.errors import InvalidPortfolioError, PortfolioClosedError
from tranche.trading.events import PortfolioChanged
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
    keep_uninvested: int = 0


@dataclass(frozen=True, slots=True)
class PortfolioView:
    """A portfolio with its composition against target, and its state: ``active`` when it buys, else why not
    (``paused``, ``closed``, ``insufficient_cash``, or the reason the investor may not buy)."""

    portfolio: Portfolio
    buckets: tuple[BucketComposition, ...]
    invested: int
    wanted: int
    written_off: int
    within_tolerance: bool
    state: str
    available_cash: int


class LedgerView(Protocol):
    """What trading reads from the ledger (through the ledger's query port)."""

    def funded(self, portfolio_id: str) -> Mapping[str, HeldPrincipal]:
        """Per funded bid of the portfolio: principal still held and principal written off."""
        ...

    def available(self, investor_id: str, currency: str) -> int:
        """The investor's cash that is neither spent nor reserved, minor units."""
        ...


class Clients(Protocol):
    """What trading asks of the client register (CRM) before it buys for an investor."""

    def may_not_buy(self, investor_id: str) -> str | None:
        """None when the investor may buy now, else why not (``consent_required``, ``suspended``, ...)."""
        ...


class EveryoneMayBuy:
    """The client register of a deployment with no conditions on buying."""

    def may_not_buy(self, investor_id: str) -> str | None:
        return None


class InMemoryLedgerView:
    """A ledger view kept in dicts: for tests and for running without a ledger. ``default_cash`` is what an
    investor the view was told nothing about has available (``None``: unlimited)."""

    def __init__(self, default_cash: int | None = None) -> None:
        self.default_cash = default_cash
        self.cash: dict[tuple[str, str], int] = {}
        self.holdings: dict[str, dict[str, HeldPrincipal]] = {}

    def funded(self, portfolio_id: str) -> Mapping[str, HeldPrincipal]:
        return self.holdings.get(portfolio_id, {})

    def available(self, investor_id: str, currency: str) -> int:
        found = self.cash.get((investor_id, currency))
        if found is not None:
            return found
        return 2**62 if self.default_cash is None else self.default_cash


class TradingService:
    """Portfolios and the gap analyzer over a :class:`PortfolioStore`, reading holdings and cash from the
    ledger and the investors' standing from the client register."""

    def __init__(
        self,
        store: PortfolioStore,
        clock: Clock,
        ledger: LedgerView | None = None,
        clients: Clients | None = None,
        ids: Callable[[str], str] = new_id,
    ) -> None:
        self.store = store
        self.clock = clock
        self.ledger: LedgerView = ledger or InMemoryLedgerView()
        self.clients: Clients = clients or EveryoneMayBuy()
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
                keep_uninvested=draft.keep_uninvested,
            )
        )
        self.store.add(portfolio, self.clock.now(), _change(portfolio, "created"))
        return portfolio

    def get(self, portfolio_id: str) -> Portfolio:
        return self.store.get(portfolio_id)

    def list_for(self, investor_id: str) -> list[Portfolio]:
        return self.store.list_for(investor_id)

    def update(self, portfolio_id: str, draft: PortfolioDraft) -> Portfolio:
        """New terms (a new version); a bucket keeps its id (and its holdings) when its name is kept. The market
        withdraws the demand made under the old terms when it applies the change."""
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
                keep_uninvested=draft.keep_uninvested,
                version=old.version + 1,
            )
        )
        if portfolio.currency != old.currency and any(p.held for p in self.positions(old).values()):
            raise InvalidPortfolioError(
                "the currency cannot change once the portfolio holds loans",
                record=portfolio_id,
                field="currency",
            )
        self.store.replace(portfolio, self.clock.now(), _change(portfolio, "edited"))
        return portfolio

    def pause(self, portfolio_id: str) -> Portfolio:
        """Stop buying; holdings stay."""
        return self._set_status(portfolio_id, PortfolioStatus.PAUSED, "paused")

    def resume(self, portfolio_id: str) -> Portfolio:
        return self._set_status(portfolio_id, PortfolioStatus.ACTIVE, "resumed")

    def close(self, portfolio_id: str) -> Portfolio:
        """Close for good: the portfolio can be read but never changed again; holdings stay."""
        return self._set_status(portfolio_id, PortfolioStatus.CLOSED, "closed")

    def positions(self, portfolio: Portfolio) -> dict[str, BucketPosition]:
        pid = portfolio.portfolio_id
        return positions(portfolio, self.store.offers(pid), self.store.fills(pid), self.ledger.funded(pid))

    def view(self, portfolio_id: str) -> PortfolioView:
        portfolio = self.store.get(portfolio_id)
        pos = self.positions(portfolio)
        held = sum(p.held for p in pos.values())
        wanted = sum(p.wanted for p in pos.values())
        cash = self.ledger.available(portfolio.investor_id, portfolio.currency)
        return PortfolioView(
            portfolio,
            tuple(composition(portfolio, pos)),
            held,
            wanted,
            sum(p.written_off for p in pos.values()),
            within_tolerance(portfolio, pos),
            self._state(portfolio, held + wanted, wanted),
            cash,
        )

    def _state(self, portfolio: Portfolio, committed: int, wanted: int) -> str:
        if portfolio.status is not PortfolioStatus.ACTIVE:
            return portfolio.status.value
        reason = self.clients.may_not_buy(portfolio.investor_id)
        if reason is not None:
            return reason
        room = portfolio.total - committed
        if (
            room >= portfolio.min_ticket
            and wanted < portfolio.min_ticket
            and self._cash_for(portfolio) < portfolio.min_ticket
        ):
            return "insufficient_cash"
        return "active"

    # ------------------------------------------------------------------ the gap analyzer

    def plan(self, portfolio_id: str) -> list[BuyOffer]:
        """One cycle of the gap analyzer for one portfolio: the buy offers to place (already recorded). Nothing
        while the investor may not buy, and never more than the investor can pay."""
        portfolio = self.store.get(portfolio_id)
        if portfolio.status is not PortfolioStatus.ACTIVE:
            return []
        if self.clients.may_not_buy(portfolio.investor_id) is not None:
            return []
        intents = plan_cycle(portfolio, self.positions(portfolio), self._cash_for(portfolio))
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
        self.store.advance_cycle(portfolio_id, cycle, now)
        return offers

    def plan_all(self, portfolio_ids: Iterable[str] | None = None) -> list[BuyOffer]:
        """A cycle for every active portfolio (or for those named)."""
        ids = self.store.active_ids() if portfolio_ids is None else sorted(set(portfolio_ids))
        offers: list[BuyOffer] = []
        for portfolio_id in ids:
            offers += self.plan(portfolio_id)
        return offers

    def _cash_for(self, portfolio: Portfolio) -> int:
        """What the investor can still commit through this portfolio: cash available, less what the
        portfolio keeps uninvested, less what the investor's open offers in the currency already want."""
        investor, currency = portfolio.investor_id, portfolio.currency
        wanted = 0
        for portfolio_id in self.store.active_of(investor, currency):
            sibling = portfolio if portfolio_id == portfolio.portfolio_id else self.store.get(portfolio_id)
            wanted += sum(p.wanted for p in self.positions(sibling).values())
        return self.ledger.available(investor, currency) - portfolio.keep_uninvested - wanted

    def active_of(self, investor_id: str, currency: str) -> list[str]:
        return self.store.active_of(investor_id, currency)

    def stale_offers(self, portfolio_id: str) -> list[str]:
        """Open buy offers the portfolio no longer wants: made under older terms, or the portfolio does not
        buy now (paused, closed, or its investor may not buy)."""
        portfolio = self.store.get(portfolio_id)
        buying = (
            portfolio.status is PortfolioStatus.ACTIVE
            and self.clients.may_not_buy(portfolio.investor_id) is None
        )
        return [
            o.buy_offer_id
            for o in self.store.offers(portfolio_id)
            if o.status == "open" and (not buying or o.portfolio_version != portfolio.version)
        ]

    def withdrawn(self, buy_offer_ids: Iterable[str]) -> set[str]:
        """The matcher took these buy offers off the books; returns the portfolios they belonged to."""
        ids = list(buy_offer_ids)
        self.store.set_offer_status(ids, "withdrawn")
        return {row.portfolio_id for row in self.store.owners(ids).values()}

    def open_buy_offers(self) -> list[BuyOffer]:
        """Every buy offer of an active portfolio that trading holds open under the portfolio's current terms,
        as it was issued."""
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

    def apply(self, events: Sequence[MatchEvent]) -> set[str]:
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

    def _set_status(self, portfolio_id: str, status: PortfolioStatus, change: str) -> Portfolio:
        portfolio = replace(self._open(portfolio_id), status=status)
        self.store.replace(portfolio, self.clock.now(), _change(portfolio, change))
        return portfolio


def _change(portfolio: Portfolio, change: str) -> PortfolioChanged:
    return PortfolioChanged(
        portfolio.portfolio_id,
        portfolio.investor_id,
        portfolio.currency,
        portfolio.version,
        portfolio.status.value,
        change,
    )
