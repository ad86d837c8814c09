"""Trading and matching working together, in process: the buy side of the market as one loop.

The loop is what the message bus does between the two contexts: trading's cycles become buy offers for the
matcher; the matcher's events update trading's positions, which may start the next cycle. ``settle`` stands
for the ledger: when it is true every match is confirmed at once (the ledger reserved the cash); otherwise
bids stay unconfirmed until :meth:`Marketplace.confirm`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tranche.matching.book import Event, SellOffer
from tranche.matching.events import OfferMatched
from tranche.matching.service import MatchingService
from tranche.trading.service import Change, TradingService


class Marketplace:
    """Drives trading's gap analyzer against the matcher until nothing more can be done."""

    def __init__(self, trading: TradingService, matching: MatchingService, settle: bool = True) -> None:
        self.trading = trading
        self.matching = matching
        self.settle = settle
        self.events: list[Event] = []  # everything the matcher said, in order, for the ledger to read

    def offer_loan(self, offer: SellOffer) -> list[Event]:
        return self._after(self.matching.offer_loan(offer))

    def replace_loan(self, old_offer_id: str | None, offer: SellOffer | None, reason: str) -> list[Event]:
        return self._after(self.matching.replace_loan(old_offer_id, offer, reason))

    def confirm(self, offer_id: str) -> list[Event]:
        return self._after(self.matching.confirm(offer_id))

    def changed(self, change: Change, reason: str) -> list[Event]:
        """A portfolio was edited, paused or closed: withdraw its old offers, then plan again."""
        events = self._after(self.matching.withdraw_buys(change.withdraw, reason))
        return events + self.run([change.portfolio.portfolio_id])

    def resync(self) -> list[Event]:
        """After a restart: hand the matcher every open buy offer trading issued that it never recorded (the
        process stopped between the two); those it holds are left as they are."""
        return self._after(self.matching.place_buys(self.trading.open_buy_offers()))

    def run(self, portfolio_ids: Iterable[str] | None = None, max_rounds: int = 1_000) -> list[Event]:
        """Cycles of the gap analyzer (for all active portfolios, or those named) until none issues offers."""
        events: list[Event] = []
        pending: set[str] | None = None if portfolio_ids is None else set(portfolio_ids)
        for _ in range(max_rounds):
            offers = self.trading.plan_all(pending)
            if not offers:
                break
            new = self._settle(self.matching.place_buys(offers))
            self.events += new
            events += new
            touched = self.trading.apply(new)
            pending = touched | {o.portfolio_id for o in offers}
        return events

    def _after(self, events: list[Event]) -> list[Event]:
        settled = self._settle(events)
        self.events += settled
        touched = self.trading.apply(settled)
        return settled + (self.run(touched) if touched else [])

    def _settle(self, events: Sequence[Event]) -> list[Event]:
        out = list(events)
        if self.settle:
            matched = dict.fromkeys(e.sell_offer_id for e in events if isinstance(e, OfferMatched))
            for offer_id in matched:
                if self.matching.matcher.has_sell(offer_id):
                    out += self.matching.confirm(offer_id)
        return out
