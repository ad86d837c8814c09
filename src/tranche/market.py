"""The market in a running process: the matcher's books, trading's gap analyzer and the events that drive
them, wired to the bus.

The matcher lives in memory and has one owner at a time: every command to it (from bus handlers and from API
requests) holds one lock. What moves it:

- ``loan.<lender>.assessed``: the assessed loan versions are offered (each replacing the loan's previous
  offer and rolling back that offer's unconfirmed bids);
- ``loan.<lender>.withdrawn|repaid|defaulted|written_off``: the loans are taken off the market at once;
- ``portfolio.<id>.drifted`` (from the ledger): the portfolio's composition moved, so the gap analyzer runs
  for it again.

After loans arrive, the gap analyzer runs for every active portfolio. Every step of the matcher is recorded
with its events (``match.<lender>.matched|funded|rolled_back``) in one transaction, through the outbox; the
ledger settles them from there.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable

from sqlalchemy import Engine

from tranche.bus import Bus, EventCodec, Message
from tranche.crm.lenders import lender_config_of
from tranche.intake.assessing import load_versions
from tranche.intake.events import LoansAssessed, LoansLeftActive
from tranche.ledger.drift import PortfolioDrifted
from tranche.matching.adapters import confirmed_amounts
from tranche.matching.book import Event, SellOffer
from tranche.matching.errors import OfferWithdrawnError
from tranche.matching.offers import MarginSchedule, RetainedShares, sell_offer_for
from tranche.matching.service import MatchingService
from tranche.shared.loan import LEFT_ACTIVE
from tranche.store.engine import reading
from tranche.trading.handlers import Marketplace
from tranche.trading.service import Change, TradingService

log = logging.getLogger(__name__)


class LockedMarketplace(Marketplace):
    """A :class:`Marketplace` whose every command holds one lock, so that API threads and bus handlers take
    turns at the books."""

    def __init__(self, trading: TradingService, matching: MatchingService, settle: bool = True) -> None:
        super().__init__(trading, matching, settle)
        self.lock = threading.RLock()

    def _after(self, events: list[Event]) -> list[Event]:
        done = super()._after(events)
        # The events went out with the matcher's record (the outbox); keeping them here would only grow.
        self.events.clear()
        return done

    def offer_loan(self, offer: SellOffer) -> list[Event]:
        with self.lock:
            return super().offer_loan(offer)

    def replace_loan(self, old_offer_id: str | None, offer: SellOffer | None, reason: str) -> list[Event]:
        with self.lock:
            return super().replace_loan(old_offer_id, offer, reason)

    def confirm(self, offer_id: str) -> list[Event]:
        with self.lock:
            return super().confirm(offer_id)

    def changed(self, change: Change, reason: str) -> list[Event]:
        with self.lock:
            return super().changed(change, reason)

    def resync(self) -> list[Event]:
        with self.lock:
            return super().resync()

    def run(self, portfolio_ids: Iterable[str] | None = None, max_rounds: int = 1_000) -> list[Event]:
        with self.lock:
            done = super().run(portfolio_ids, max_rounds)
            self.events.clear()
            return done


class MarketNode:
    """Handlers of the events that move the market, bound to the store and the marketplace."""

    def __init__(self, engine: Engine, market: LockedMarketplace, *, lot: int = 100) -> None:
        self.engine = engine
        self.market = market
        self.lot = lot

    def _terms(self, lender_id: str) -> tuple[MarginSchedule, RetainedShares]:
        with reading(self.engine) as conn:
            _version, config = lender_config_of(conn, lender_id)
        return MarginSchedule(per_lender={lender_id: config.margin}), RetainedShares(
            per_lender={lender_id: config.retained_share}
        )

    def loans_assessed(self, event: LoansAssessed) -> int:
        """Offer the assessed versions, then let every portfolio buy; returns how many were offered."""
        keys = [(a.loan_id, a.version) for a in event.loans]
        groups = {(a.loan_id, a.version): a.risk_group for a in event.loans}
        with reading(self.engine) as conn:
            loans = load_versions(conn, event.lender_id, keys)
            # What investors already own of a loan is not sold again when a new version is offered.
            sold = confirmed_amounts(conn, event.lender_id, [k for k, _ in keys])
        margins, retained = self._terms(event.lender_id)
        offered = 0
        with self.market.lock:
            for loan, version in loans:
                offer = sell_offer_for(
                    loan,
                    version,
                    groups[(loan.loan_id, version)],
                    margins,
                    retained,
                    self.lot,
                    sold.get(loan.loan_id, 0),
                )
                previous = self.market.matching.matcher.live_offer_of(loan.lender_id, loan.loan_id)
                if previous is None and offer is None:
                    continue
                try:
                    self.market.replace_loan(previous, offer, "loan changed")
                except OfferWithdrawnError:
                    continue  # the loan was taken off the market after this version: never sell it again
                offered += offer is not None
            self.market.run()
        return offered

    def loans_left_active(self, event: LoansLeftActive) -> None:
        """Take the loans off the market at once: they are never sold after this."""
        with self.market.lock:
            for key in event.loans:
                previous = self.market.matching.matcher.live_offer_of(event.lender_id, key.loan_id)
                if previous is not None:
                    self.market.replace_loan(previous, None, event.status)

    def portfolio_drifted(self, event: PortfolioDrifted) -> None:
        self.market.run([event.portfolio_id])

    def subscriber(self, codec: EventCodec, *, group: str = "market") -> Callable[[Bus], Awaitable[None]]:
        """For the composition root's list of subscribers."""

        async def handle(message: Message) -> None:
            event = codec.from_message(message)
            if isinstance(event, LoansAssessed):
                await asyncio.to_thread(self.loans_assessed, event)
            elif isinstance(event, LoansLeftActive):
                await asyncio.to_thread(self.loans_left_active, event)
            elif isinstance(event, PortfolioDrifted):
                await asyncio.to_thread(self.portfolio_drifted, event)

        async def subscribe(bus: Bus) -> None:
            patterns = [
                "loan.*.assessed",
                *(f"loan.*.{status}" for status in LEFT_ACTIVE),
                "portfolio.*.drifted",
            ]
            await bus.subscribe(patterns, handle, group=group)

        return subscribe
