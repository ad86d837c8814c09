"""The matcher with its durable record: every step is recorded before its events are handed on."""

from __future__ import annotations

from collections.abc import Iterable

from tranche.matching.book import BuyOffer, Event, Matcher, SellOffer
from tranche.matching.errors import OfferWithdrawnError
from tranche.matching.record import MatchingRecord


class MatchingService:
    """Commands to the order books. Each returns the events it caused (``OfferMatched``, ``LoanFunded``,
    ``BidsRolledBack``), already recorded, for the caller to publish."""

    def __init__(self, matcher: Matcher, record: MatchingRecord) -> None:
        self.matcher = matcher
        self.record = record

    @classmethod
    def rebuild(cls, record: MatchingRecord) -> MatchingService:
        """After a restart: the books as the record left them."""
        return cls(Matcher.restore(record.load()), record)

    def _step(self, events: list[Event]) -> list[Event]:
        try:
            self.record.save(self.matcher.drain_changes(), events)
        except Exception:
            # the books ran ahead of the record: go back to what the record holds, then let the caller retry
            self.matcher = Matcher.restore(self.record.load())
            raise
        return events

    def offer_loan(self, offer: SellOffer) -> list[Event]:
        """Offer a loan version. A redelivered offer the record already holds changes nothing (it returns no
        events); one that was withdrawn raises :class:`OfferWithdrawnError` and is never sold."""
        known = self.record.statuses([offer.offer_id]).get(offer.offer_id)
        if known == "withdrawn":
            raise OfferWithdrawnError(f"sell offer {offer.offer_id} was withdrawn", record=offer.offer_id)
        if known is not None:
            return []
        return self._step(self.matcher.add_sell(offer))

    def replace_loan(self, old_offer_id: str | None, offer: SellOffer | None, reason: str) -> list[Event]:
        """A loan changed (new version), or was withdrawn or repaid (``offer`` None): its old offer goes,
        its unconfirmed bids are rolled back, and the new version (if any) is offered."""
        events: list[Event] = []
        if old_offer_id is not None and self.matcher.has_sell(old_offer_id):
            events += self.matcher.withdraw_sell(old_offer_id, reason)
        if offer is not None and offer.offer_id not in self.record.statuses([offer.offer_id]):
            events += self.matcher.add_sell(offer)
        return self._step(events)

    def withdraw_loan(self, offer_id: str, reason: str) -> list[Event]:
        return self._step(self.matcher.withdraw_sell(offer_id, reason))

    def place_buys(self, offers: Iterable[BuyOffer]) -> list[Event]:
        """Place buy offers; any the record already holds (a redelivery) are left out."""
        offers = list(offers)
        known = self.record.statuses([o.buy_offer_id for o in offers])
        return self._step(self.matcher.add_buys(o for o in offers if o.buy_offer_id not in known))

    def withdraw_buys(self, buy_offer_ids: Iterable[str], reason: str) -> list[Event]:
        events: list[Event] = []
        for buy_offer_id in buy_offer_ids:
            events += self.matcher.withdraw_buy(buy_offer_id, reason)
        return self._step(events)

    def confirm(self, offer_id: str) -> list[Event]:
        return self._step(self.matcher.confirm(offer_id))
