"""The durable record of the matcher: offers, bids and their statuses, from which the books are rebuilt.

:class:`MatchingRecord` is the port; :class:`InMemoryMatchingRecord` is its embedded implementation and
``tranche.matching.adapters.SqlMatchingRecord`` the one on the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from tranche.matching.events import BidsRolledBack, LoanFunded, OfferMatched
from tranche.matching.values import BidRecord, BuyOffer, Changes, DurableState, MatchEvent, SellOffer

OfferStatus = Literal["open", "withdrawn", "finished"]


class MatchingRecord(Protocol):
    """Where the matcher's offers and bids are kept."""

    def save(self, changes: Changes, events: Sequence[MatchEvent]) -> None:
        """Record one step of the matcher: new offers first, then the bids of its events, then statuses."""
        ...

    def load(self) -> DurableState:
        """The open offers in arrival order and every bid that touches one of them."""
        ...

    def statuses(self, offer_ids: Sequence[str]) -> dict[str, OfferStatus]:
        """The recorded status of those of these offers (sell or buy) that were ever recorded."""
        ...


class InMemoryMatchingRecord:
    """The record kept in dicts: for tests and for running without a store."""

    def __init__(self) -> None:
        self.sells: dict[str, tuple[int, SellOffer, OfferStatus]] = {}
        self.buys: dict[str, tuple[int, BuyOffer, OfferStatus]] = {}
        self.bids: dict[str, BidRecord] = {}

    def save(self, changes: Changes, events: Sequence[MatchEvent]) -> None:
        for seq, sell in changes.sells:
            self.sells[sell.offer_id] = (seq, sell, "open")
        for seq, buy in changes.buys:
            self.buys[buy.buy_offer_id] = (seq, buy, "open")
        for event in events:
            if isinstance(event, OfferMatched):
                for bid in event.bids:
                    self.bids[bid.bid_id] = BidRecord(bid, event.sell_offer_id, event.match_id, "placed")
            elif isinstance(event, LoanFunded):
                for bid_id in event.bid_ids:
                    old = self.bids[bid_id]
                    self.bids[bid_id] = BidRecord(old.bid, old.sell_offer_id, old.match_id, "confirmed")
            elif isinstance(event, BidsRolledBack):
                for bid_id in event.bid_ids:
                    old = self.bids[bid_id]
                    self.bids[bid_id] = BidRecord(old.bid, old.sell_offer_id, old.match_id, "rolled_back")
        for status, ids in (("withdrawn", changes.withdrawn), ("finished", changes.finished)):
            for offer_id in ids:
                if offer_id in self.sells:
                    seq, sell, _ = self.sells[offer_id]
                    self.sells[offer_id] = (seq, sell, status)  # type: ignore[assignment]
                else:
                    bseq, buy, _ = self.buys[offer_id]
                    self.buys[offer_id] = (bseq, buy, status)  # type: ignore[assignment]

    def statuses(self, offer_ids: Sequence[str]) -> dict[str, OfferStatus]:
        found: dict[str, OfferStatus] = {}
        for offer_id in offer_ids:
            if offer_id in self.sells:
                found[offer_id] = self.sells[offer_id][2]
            elif offer_id in self.buys:
                found[offer_id] = self.buys[offer_id][2]
        return found

    def load(self) -> DurableState:
        sells = sorted((seq, s) for seq, s, status in self.sells.values() if status == "open")
        buys = sorted((seq, b) for seq, b, status in self.buys.values() if status == "open")
        open_sells = {s.offer_id for _, s in sells}
        open_buys = {b.buy_offer_id for _, b in buys}
        bids = tuple(
            r for r in self.bids.values() if r.sell_offer_id in open_sells or r.bid.buy_offer_id in open_buys
        )
        return DurableState(tuple(sells), tuple(buys), bids)
