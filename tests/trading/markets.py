"""The market role in memory, with a :class:`Cashbook` for a ledger, for the trading tests."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from tranche.matching import (
    BidsRolledBack,
    Criteria,
    InMemoryMatchingRecord,
    LoanFunded,
    LoanTraits,
    Matcher,
    MatchEvent,
    MatchingRecord,
    MatchingService,
    OfferMatched,
    SellOffer,
)
from tranche.shared.clock import ManualClock
from tranche.trading import (
    BucketDraft,
    Cashbook,
    InMemoryPortfolioStore,
    Market,
    PortfolioDraft,
    PortfolioStore,
    TradingService,
)


class Harness:
    """A market whose every step's events reach the cashbook, as the ledger receives them from the bus."""

    def __init__(
        self,
        book: Cashbook | None = None,
        store: PortfolioStore | None = None,
        record: MatchingRecord | None = None,
    ) -> None:
        self.book = book or Cashbook()
        self.trading = TradingService(store or InMemoryPortfolioStore(), ManualClock(), ledger=self.book)
        self.market = Market(
            self.trading, MatchingService(Matcher(), record or InMemoryMatchingRecord()), self.book
        )
        self.events: list[MatchEvent] = []

    def _seen(self, events: list[MatchEvent]) -> list[MatchEvent]:
        self.book.apply(events)
        self.events += events
        return events

    def offer(self, *offers: SellOffer) -> list[MatchEvent]:
        events: list[MatchEvent] = []
        for offer in offers:
            events += self.market.offer_loans(offer.lender_id, [(offer.loan_id, offer)])
        return self._seen(events)

    def offer_all(self, offers: Sequence[SellOffer]) -> list[MatchEvent]:
        by_lender: dict[str, list[tuple[str, SellOffer | None]]] = {}
        for offer in offers:
            by_lender.setdefault(offer.lender_id, []).append((offer.loan_id, offer))
        events: list[MatchEvent] = []
        for lender_id, pairs in by_lender.items():
            events += self.market.offer_loans(lender_id, pairs)
        return self._seen(events)

    def rebalance(self, portfolio_ids: Sequence[str] | None = None) -> list[MatchEvent]:
        return self._seen(self.market.rebalance(portfolio_ids))

    def changed(self, portfolio_id: str, change: str = "changed") -> list[MatchEvent]:
        return self._seen(self.market.portfolio_changed(portfolio_id, change))

    def take_off(self, lender_id: str, loan_ids: Sequence[str], reason: str) -> list[MatchEvent]:
        return self._seen(self.market.take_off(lender_id, loan_ids, reason))

    def cash_changed(self, investor_id: str, currency: str = "EUR") -> list[MatchEvent]:
        return self._seen(self.market.cash_changed(investor_id, currency))

    def settle_unsettled(self) -> list[MatchEvent]:
        return self._seen(self.market.settle_unsettled())


def loan_offer(
    loan_id: str, amount: int, *, aon: bool = False, lender: str = "len_es", rate: str = "0.10"
) -> SellOffer:
    """A sell offer of a whole loan of ``amount`` minor units, version 1."""
    return SellOffer(
        f"{lender}/{loan_id}/v1",
        lender,
        loan_id,
        1,
        "EUR",
        amount,
        Decimal(rate),
        Decimal("0.02"),
        aon,
        LoanTraits("ES", 30, 720, 300_000, "A", 36, lender),
    )


def one_bucket(total: int, cap: int, ticket: int = 1_000, tranche: str = "10") -> PortfolioDraft:
    return PortfolioDraft(
        "EUR",
        total,
        cap,
        ticket,
        (BucketDraft("any", Decimal(100), Criteria()),),
        tranche_percent=Decimal(tranche),
    )


def check_invariants(h: Harness) -> None:
    """What must hold whenever the market is quiet, in the terms of the issue: every bid the matcher confirmed
    is funded in the ledger and no more than offered is sold; an all-or-nothing loan is sold 0 % or 100 %; no bid
    waits for the ledger and no loan part is stranded; what trading shows as held is what the ledger holds."""
    matcher = h.market.matching.matcher
    assert matcher.unsettled() == []
    confirmed = {b for e in h.events if isinstance(e, LoanFunded) for b in e.bid_ids}
    rolled = {b for e in h.events if isinstance(e, BidsRolledBack) for b in e.bid_ids}
    assert confirmed == set(h.book.posted), "confirmed bids and funded bids differ"
    assert not confirmed & rolled
    assert not h.book.reserved, "a reservation was neither posted nor voided"
    bids = {bid.bid_id: (e, bid) for e in h.events if isinstance(e, OfferMatched) for bid in e.bids}
    sold: dict[str, int] = {}
    offered: dict[str, tuple[int, bool]] = {}
    for bid_id in confirmed:
        event, bid = bids[bid_id]
        sold[event.sell_offer_id] = sold.get(event.sell_offer_id, 0) + bid.amount
    for event, _ in bids.values():
        offered[event.sell_offer_id] = (0, event.all_or_nothing)
    for offer_id, amount in sold.items():
        if matcher.has_sell(offer_id):
            assert matcher.sell_remaining(offer_id) + amount >= 0
    for offer_id in offered:
        if matcher.has_sell(offer_id):  # still on offer: what is not sold is for sale, none of it placed
            assert not matcher._sells[offer_id].placed
            total = matcher._sells[offer_id].offer.amount
            assert matcher.sell_remaining(offer_id) + sold.get(offer_id, 0) == total
            if offered[offer_id][1]:
                assert sold.get(offer_id, 0) in (0, total), "an all-or-nothing loan is partly sold"
    for portfolio_id in {bid.portfolio_id for _, bid in bids.values()}:
        view = h.trading.view(portfolio_id)
        ledger = sum(held.held for held in h.book.funded(portfolio_id).values())
        assert view.invested == ledger, (
            f"{portfolio_id}: trading shows {view.invested}, the ledger holds {ledger}"
        )
