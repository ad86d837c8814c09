"""The matcher with its durable record: every step is recorded, with its events, before they are handed on."""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence

from tranche.matching.book import Matcher
from tranche.matching.errors import OfferWithdrawnError
from tranche.matching.events import OfferMatched
from tranche.matching.record import MatchingRecord
from tranche.matching.values import BuyOffer, MatchEvent, SellOffer


class MatchingService:
    """Commands to the order books. Each returns the events it caused (``OfferMatched``, ``LoanFunded``,
    ``BidsRolledBack``), already recorded, for the caller to act on. Every command is idempotent: given again
    (a redelivered message), it changes nothing."""

    def __init__(self, matcher: Matcher, record: MatchingRecord) -> None:
        self.matcher = matcher
        self.record = record

    @classmethod
    def rebuild(cls, record: MatchingRecord) -> MatchingService:
        """After a restart: the books as the record left them."""
        return cls(Matcher.restore(record.load()), record)

    def _step(self, events: list[MatchEvent]) -> list[MatchEvent]:
        try:
            self.record.save(self.matcher.drain_changes(), events)
        except Exception:
            # the books ran ahead of the record: go back to what the record holds, then let the caller retry
            self.matcher = Matcher.restore(self.record.load())
            raise
        return events

    def offer_loan(self, offer: SellOffer) -> list[MatchEvent]:
        """Offer a loan version. A redelivered offer the record already holds changes nothing (it returns no
        events); one that was withdrawn raises :class:`OfferWithdrawnError` and is never sold."""
        known = self.record.statuses([offer.offer_id]).get(offer.offer_id)
        if known == "withdrawn":
            raise OfferWithdrawnError(f"sell offer {offer.offer_id} was withdrawn", record=offer.offer_id)
        if known is not None:
            return []
        return self._step(self.matcher.add_sell(offer))

    def replace_loan(
        self, lender_id: str, loan_id: str, offer: SellOffer | None, reason: str
    ) -> list[MatchEvent]:
        """A loan has a new version to offer (``offer``), or nothing left to offer (``offer`` None: changed to
        nothing for sale, withdrawn, repaid, ...): the loan's live offer goes, its unconfirmed bids are rolled
        back, and the new offer (if any) is offered. The loan's live offer being ``offer`` itself, or ``offer``
        having been recorded before (a redelivered event), changes nothing."""
        live = self.matcher.live_offer_of(lender_id, loan_id)
        if offer is not None and (
            live == offer.offer_id or offer.offer_id in self.record.statuses([offer.offer_id])
        ):
            return []
        events: list[MatchEvent] = []
        if live is not None:
            events += self.matcher.withdraw_sell(live, reason)
        if offer is not None:
            events += self.matcher.add_sell(offer)
        return self._step(events) if events or offer is not None else []

    def live_offer_of(self, lender_id: str, loan_id: str) -> str | None:
        """The id of the loan's live sell offer, if it has one."""
        return self.matcher.live_offer_of(lender_id, loan_id)

    def place_buys(self, offers: Iterable[BuyOffer]) -> list[MatchEvent]:
        """Place buy offers; any the record already holds (a redelivery) are left out."""
        offers = list(offers)
        known = self.record.statuses([o.buy_offer_id for o in offers])
        return self._step(self.matcher.add_buys(o for o in offers if o.buy_offer_id not in known))

    def withdraw_buys(self, buy_offer_ids: Iterable[str], reason: str) -> list[MatchEvent]:
        events: list[MatchEvent] = []
        for buy_offer_id in buy_offer_ids:
            events += self.matcher.withdraw_buy(buy_offer_id, reason)
        return self._step(events)

    def settle(
        self,
        matches: Sequence[OfferMatched],
        reserved: Container[str],
        refused: Mapping[str, str],
        withdraw: Iterable[str] = (),
        withdraw_reason: str = "insufficient_cash",
    ) -> list[MatchEvent]:
        """Apply the ledger's answer about the bids ``matches`` placed (see :meth:`Matcher.settle`)."""
        return self._step(self.matcher.settle(matches, reserved, refused, withdraw, withdraw_reason))

    def unsettled(self) -> list[OfferMatched]:
        """The placed bids the ledger has not answered for yet, one match per loan."""
        return self.matcher.unsettled()

    def buys_of(self, investor_id: str, currency: str) -> list[str]:
        """The investor's live buy offers in one currency."""
        return self.matcher.buys_of(investor_id, currency)
