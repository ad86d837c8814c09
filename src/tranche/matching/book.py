"""The order books: sell offers (parts of loans) against buy offers (buckets' demand), one book per currency.

Pure and in memory: no I/O, no clock. Every call returns the events it caused; the durable record of offers
and bids is kept by the caller, and :meth:`Matcher.restore` rebuilds the same books from it.

How the book is laid out, and why
---------------------------------
Demand is grouped by *criteria*: every buy offer whose bucket asks the same thing (criteria include the
investor's minimum rate) waits in one FIFO queue, a :class:`_Demand`, and each queue of a market owns one bit,
ranked most demanding first. A loan has seven dimensions (country, risk group, lender, borrower age, credit
score, income, term); the integer ones are cut at every range boundary of the live criteria. For each
dimension the book caches, per value (or per interval between cuts), the bit set of the queues that accept
it; a loan's *mask* is the AND of its seven bit sets, i.e. exactly the queues that accept it, and the list of
queues of each mask is cached too. So a new sell offer costs four bisections, seven dictionary lookups and an
AND before it meets the demand that accepts it, and never looks at demand that does not. New criteria renumber
the bits: the caches are dropped and refilled lazily.

Unsold loans rest in arrival order, partial-funding and all-or-nothing ones apart, and are indexed by their
mask. When demand arrives (new buy offers, or demand given back by a rollback) the OR of the arriving queues'
bits picks the resting loans any of them accepts; only those loans, and only the arriving buy offers, are
tried, so demand that had already been offered a loan is not walked again.

Priorities
----------
- A new sell offer serves the queues with the highest minimum rate first (the most demanding investors, who
  have the fewest loans to choose from), FIFO within a queue.
- Arriving demand is offered the resting all-or-nothing loans first, most sellable first (below), then the
  resting partial-funding loans, oldest loan first, so that no loan ages in the book while newer ones sell.
- All-or-nothing loans are sold in one piece or not at all: a trial allocation is computed and kept only if
  it covers the whole offer, so no investor's money is parked in a loan that does not fill. When demand
  arrives, resting all-or-nothing loans are ranked by *sellability*: the demand that could go into the loan
  (for every compatible queue, the sum over its offers of what each could take from one loan, in whole
  tickets and within its per-loan cap) divided by the loan's remaining amount. Loans whose sellability is
  below one cannot fill and are not tried; the others are tried from the highest sellability down, ties to
  the oldest.
- Fills are whole multiples of the buy offer's minimum ticket; one portfolio (over all of its buckets) takes
  at most its per-loan cap from one loan.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from tranche.matching.criteria import Criteria, LoanTraits
from tranche.matching.errors import (
    DuplicateOfferError,
    InvalidOfferError,
    OfferWithdrawnError,
    UnknownOfferError,
)
from tranche.matching.events import Bid, BidsRolledBack, LoanFunded, OfferMatched

Event = OfferMatched | LoanFunded | BidsRolledBack
BidStatus = Literal["placed", "confirmed", "rolled_back"]


@dataclass(frozen=True, slots=True)
class SellOffer:
    """The part of one version of an assessed loan that its lender sells."""

    offer_id: str
    lender_id: str
    loan_id: str
    loan_version: int
    currency: str
    amount: int  # minor units offered: outstanding principal less the lender's retained share
    lender_rate: Decimal
    margin: Decimal
    all_or_nothing: bool
    traits: LoanTraits
    product: str = ""

    @property
    def investor_rate(self) -> Decimal:
        """What the investors earn: the lender's rate less the platform's margin."""
        return self.lender_rate - self.margin


@dataclass(frozen=True, slots=True)
class BuyOffer:
    """One bucket's demand in one cycle of its portfolio."""

    buy_offer_id: str
    portfolio_id: str
    investor_id: str
    bucket_id: str
    cycle: int
    currency: str
    amount: int  # minor units wanted
    min_ticket: int
    per_loan_cap: int
    criteria: Criteria


@dataclass(frozen=True, slots=True)
class BidRecord:
    """A bid as the durable record holds it: the event's bid plus where it belongs and its status."""

    bid: Bid
    sell_offer_id: str
    match_id: str
    status: BidStatus


@dataclass(frozen=True, slots=True)
class DurableState:
    """Everything the matcher needs to rebuild its books: open offers in arrival order, and their bids."""

    sells: tuple[tuple[int, SellOffer], ...]  # (seq, offer)
    buys: tuple[tuple[int, BuyOffer], ...]
    # every bid on an open sell offer or from an open buy offer, rolled back ones included
    bids: tuple[BidRecord, ...]


@dataclass
class Changes:
    """What the matcher did besides the bids its events carry: the durable record applies both."""

    sells: list[tuple[int, SellOffer]] = field(default_factory=list)
    buys: list[tuple[int, BuyOffer]] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)  # offer ids (sell or buy), never to trade again
    finished: list[str] = field(default_factory=list)  # offer ids sold out or filled, and settled

    def __bool__(self) -> bool:
        return bool(self.sells or self.buys or self.withdrawn or self.finished)


class _Demand:
    """All live buy offers with equal criteria, FIFO by arrival."""

    __slots__ = ("bit", "criteria", "min_rate", "order", "queue")

    def __init__(self, criteria: Criteria, order: int) -> None:
        self.criteria = criteria
        self.min_rate = criteria.min_investor_rate
        self.order = order
        self.bit = order  # its position in the market's masks
        self.queue: dict[str, _Buy] = {}

    def capacity(self) -> int:
        """What all queued offers could take from one loan: the numerator of sellability."""
        return sum(buy.takeable() for buy in self.queue.values())


class _Buy:
    __slots__ = (
        "cap",
        "demand",
        "id",
        "investor",
        "offer",
        "placed",
        "portfolio",
        "remaining",
        "seq",
        "ticket",
    )

    def __init__(self, offer: BuyOffer, seq: int, demand: _Demand) -> None:
        self.offer = offer
        self.seq = seq
        self.demand = demand
        self.remaining = offer.amount
        self.ticket = offer.min_ticket
        self.cap = offer.per_loan_cap
        self.portfolio = offer.portfolio_id
        self.id = offer.buy_offer_id
        self.investor = offer.investor_id
        self.placed: dict[str, _Sell] = {}  # unconfirmed bids: bid id -> the loan's offer

    def takeable(self) -> int:
        amount = min(self.remaining, self.cap)
        return amount - amount % self.ticket


class _Sell:
    __slots__ = (
        "bid_count",
        "by_portfolio",
        "confirmed",
        "investor_rate",
        "mask",
        "mask_generation",
        "match_count",
        "offer",
        "placed",
        "remaining",
        "resting",
        "seq",
        "traits",
    )

    def __init__(self, offer: SellOffer, seq: int) -> None:
        self.offer = offer
        self.seq = seq
        self.traits = offer.traits
        self.investor_rate = offer.lender_rate - offer.margin
        self.remaining = offer.amount
        self.confirmed = 0
        self.placed: dict[str, tuple[Bid, _Buy]] = {}  # unconfirmed bids
        self.by_portfolio: dict[str, int] = {}
        self.bid_count = 0
        self.match_count = 0
        self.resting = False
        self.mask = 0  # the queues that accept it, as of the market's generation mask_generation
        self.mask_generation = -1


def _in_range(value: int, low: int | None, high: int | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


# One test per dimension of a loan, in the order of the keys in _Market.mask_of.
_DIMENSIONS: tuple[Callable[[Criteria, LoanTraits], bool], ...] = (
    lambda c, t: c.countries is None or t.country in c.countries,
    lambda c, t: c.risk_groups is None or t.risk_group in c.risk_groups,
    lambda c, t: (
        (c.lenders_in is None or t.lender_id in c.lenders_in) and t.lender_id not in c.lenders_not_in
    ),
    lambda c, t: _in_range(t.borrower_age, c.age_min, c.age_max),
    lambda c, t: _in_range(t.credit_score, c.score_min, c.score_max),
    lambda c, t: _in_range(t.income_monthly, c.income_min, None),
    lambda c, t: _in_range(t.term_months, c.term_min, c.term_max),
)


def _queue_order(d: _Demand) -> tuple[Decimal, int]:
    return (-d.min_rate, d.order)


def _sell_seq(s: _Sell) -> int:
    return s.seq


def _buy_seq(b: _Buy) -> int:
    return b.seq


class _Market:
    """The book of one currency."""

    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.demand: dict[Criteria, _Demand] = {}
        self.by_bit: list[_Demand] = []
        self.cuts: tuple[list[int], list[int], list[int], list[int]] = ([], [], [], [])
        self.dimension_masks: tuple[dict[object, int], ...] = tuple({} for _ in _DIMENSIONS)
        self.by_mask: dict[int, list[_Demand]] = {}
        self.resting: dict[str, _Sell] = {}
        self.aon: dict[str, _Sell] = {}
        # resting loans (both kinds) by the bit set of the queues that accept them, so that arriving demand
        # finds the loans it accepts without looking at the others; rebuilt lazily when bits change
        self.index: dict[int, dict[str, _Sell]] = {}
        self.index_stale = False
        self.generation = 0  # moves on whenever the bits are renumbered
        # a loan's remainder below every ticket ever seen cannot be sold: the fill loop stops there
        self.smallest_ticket: int | None = None

    def demand_for(self, criteria: Criteria) -> _Demand:
        found = self.demand.get(criteria)
        if found is not None:
            return found
        created = _Demand(criteria, len(self.demand))
        self.demand[criteria] = created
        # bits are ranked most demanding first, so a mask lists its queues in serving order
        self.by_bit.append(created)
        self.by_bit.sort(key=_queue_order)
        for bit, demand in enumerate(self.by_bit):
            demand.bit = bit
        for cuts, points in zip(self.cuts, criteria.boundaries(), strict=True):
            for point in points:
                index = bisect_right(cuts, point)
                if index == 0 or cuts[index - 1] != point:
                    insort(cuts, point)
        # every mask gains a bit (and interval numbers may shift): recompute lazily
        for cache in self.dimension_masks:
            cache.clear()
        self.by_mask.clear()
        self.index.clear()
        self.index_stale = True
        self.generation += 1
        return created

    def queues_of(self, sell: _Sell) -> list[_Demand]:
        """The demand queues whose criteria accept this loan (ignoring the rate), most demanding first."""
        if sell.mask_generation != self.generation:
            sell.mask = self.mask_of(sell.traits)
            sell.mask_generation = self.generation
        mask = sell.mask
        queues = self.by_mask.get(mask)
        if queues is None:
            queues = []
            rest = mask
            while rest:
                low = rest & -rest
                queues.append(self.by_bit[low.bit_length() - 1])
                rest ^= low
            self.by_mask[mask] = queues
        return queues

    def mask_of(self, traits: LoanTraits) -> int:
        """The bit set of the queues whose criteria accept this loan (ignoring the rate).

        Each dimension maps the loan's value (or, for ranges, the interval between cuts it falls in) to the
        bit set of queues that accept it; the loan's bit set is the AND of its seven.
        """
        masks = self.dimension_masks
        age, score, income, term = self.cuts
        keys = (
            traits.country,
            traits.risk_group,
            traits.lender_id,
            bisect_right(age, traits.borrower_age),
            bisect_right(score, traits.credit_score),
            bisect_right(income, traits.income_monthly),
            bisect_right(term, traits.term_months),
        )
        mask = -1
        for dimension, key in enumerate(keys):
            bits = masks[dimension].get(key)
            if bits is None:
                bits = masks[dimension][key] = self._dimension_mask(dimension, traits)
            mask &= bits
            if not mask:
                break
        return mask

    def resting_accepted_by(self, demands: Iterable[_Demand]) -> list[_Sell]:
        """The resting loans (both kinds) that any of these queues accepts, oldest first."""
        if self.index_stale:
            self.index_stale = False
            for sell in (*self.resting.values(), *self.aon.values()):
                self._index(sell)
        bits = 0
        for demand in demands:
            bits |= 1 << demand.bit
        found = [sell for mask, group in self.index.items() if mask & bits for sell in group.values()]
        found.sort(key=_sell_seq)
        return found

    def _index(self, sell: _Sell) -> None:
        if sell.mask_generation != self.generation:
            sell.mask = self.mask_of(sell.traits)
            sell.mask_generation = self.generation
        group = self.index.get(sell.mask)
        if group is None:
            group = self.index[sell.mask] = {}
        group[sell.offer.offer_id] = sell

    def _dimension_mask(self, dimension: int, t: LoanTraits) -> int:
        mask = 0
        for demand in self.by_bit:
            if _DIMENSIONS[dimension](demand.criteria, t):
                mask |= 1 << demand.bit
        return mask

    def enqueue(self, buy: _Buy) -> None:
        queue = buy.demand.queue
        key = buy.offer.buy_offer_id
        if queue and next(reversed(queue.values())).seq > buy.seq:
            # a rolled-back offer goes back to its place in the FIFO, as a rebuild would put it
            queue[key] = buy
            ordered = sorted(queue.values(), key=_buy_seq)
            queue.clear()
            queue.update((b.offer.buy_offer_id, b) for b in ordered)
        else:
            queue[key] = buy

    def dequeue(self, buy: _Buy) -> None:
        buy.demand.queue.pop(buy.offer.buy_offer_id, None)

    def rest(self, sell: _Sell) -> None:
        if sell.resting or sell.remaining <= 0:
            return
        sell.resting = True
        if not self.index_stale:
            self._index(sell)
        if sell.offer.all_or_nothing:
            _insert_by_seq(self.aon, sell)
            return
        _insert_by_seq(self.resting, sell)

    def unrest(self, sell: _Sell) -> None:
        if not sell.resting:
            return
        sell.resting = False
        offer_id = sell.offer.offer_id
        if not self.index_stale:
            group = self.index[sell.mask]
            del group[offer_id]
            if not group:
                del self.index[sell.mask]
        if sell.offer.all_or_nothing:
            del self.aon[offer_id]
            return
        del self.resting[offer_id]


def _insert_by_seq(fifo: dict[str, _Sell], sell: _Sell) -> None:
    key = sell.offer.offer_id
    if fifo and next(reversed(fifo.values())).seq > sell.seq:
        fifo[key] = sell
        ordered = sorted(fifo.values(), key=_sell_seq)
        fifo.clear()
        fifo.update((s.offer.offer_id, s) for s in ordered)
    else:
        fifo[key] = sell


Fill = tuple[_Buy, int]


class Matcher:
    """The in-memory order books of every market, and the bids not yet settled.

    Offers are immutable: a loan that changes is withdrawn and offered again as a new offer (a new loan
    version); a portfolio that is edited withdraws its buy offers and issues new ones.
    """

    def __init__(self) -> None:
        self._markets: dict[str, _Market] = {}
        self._sells: dict[str, _Sell] = {}
        self._by_loan: dict[tuple[str, str], str] = {}  # (lender, loan) -> its live offer
        self._buys: dict[str, _Buy] = {}
        self._withdrawn: set[str] = set()
        self._seq = 0
        self._changes = Changes()

    # ------------------------------------------------------------------ public commands

    def add_sell(self, offer: SellOffer) -> list[Event]:
        """Offer (part of) a loan: sell it to the resting demand as far as it goes, rest the remainder."""
        self._check_sell(offer)
        sell = _Sell(offer, self._next_seq())
        self._sells[offer.offer_id] = sell
        self._by_loan[(offer.lender_id, offer.loan_id)] = offer.offer_id
        self._changes.sells.append((sell.seq, offer))
        market = self._market(offer.currency)
        events: list[Event] = []
        self._sell_to_demand(market, sell, events)
        market.rest(sell)
        self._maybe_finish_sell(sell)
        return events

    def add_buys(self, offers: Iterable[BuyOffer]) -> list[Event]:
        """Place buckets' demand: buy resting loans for each, then retry resting all-or-nothing loans."""
        events: list[Event] = []
        added: list[_Buy] = []
        for offer in offers:
            self._check_buy(offer)
            market = self._market(offer.currency)
            buy = _Buy(offer, self._next_seq(), market.demand_for(offer.criteria))
            self._buys[offer.buy_offer_id] = buy
            self._changes.buys.append((buy.seq, offer))
            if market.smallest_ticket is None or offer.min_ticket < market.smallest_ticket:
                market.smallest_ticket = offer.min_ticket
            if buy.remaining >= buy.ticket:
                market.enqueue(buy)
            added.append(buy)
        for currency in sorted({b.offer.currency for b in added}):
            self._offer_resting(
                self._markets[currency], [b for b in added if b.offer.currency == currency], events
            )
        for buy in added:
            self._maybe_finish_buy(buy)
        return events

    def add_buy(self, offer: BuyOffer) -> list[Event]:
        """One buy offer; see :meth:`add_buys`."""
        return self.add_buys((offer,))

    def withdraw_sell(self, offer_id: str, reason: str) -> list[Event]:
        """Take a loan's offer off the market (loan changed, withdrawn or repaid) for good.

        Its unconfirmed bids are rolled back and the demand they held is matched again; the offer is never
        sold after this call, and confirming it later raises :class:`OfferWithdrawnError`.
        """
        sell = self._sells.get(offer_id)
        if sell is None:
            if offer_id in self._withdrawn:
                return []
            raise UnknownOfferError(f"no sell offer {offer_id}", record=offer_id)
        market = self._markets[sell.offer.currency]
        market.unrest(sell)
        events: list[Event] = []
        freed = self._roll_back(market, sell, list(sell.placed.values()), reason, events)
        del self._sells[offer_id]
        self._forget_loan(sell.offer)
        self._withdrawn.add(offer_id)
        self._changes.withdrawn.append(offer_id)
        self._offer_resting(market, freed, events)
        return events

    def withdraw_buy(self, buy_offer_id: str, reason: str) -> list[Event]:
        """Withdraw a bucket's demand (portfolio edited, paused or closed): roll back its unconfirmed bids
        and sell the loans they were on again. An offer the books no longer hold (withdrawn before, or filled
        and settled) changes nothing."""
        buy = self._buys.get(buy_offer_id)
        if buy is None:
            # already withdrawn, or filled and settled (then there is nothing left to undo)
            return []
        market = self._markets[buy.offer.currency]
        market.dequeue(buy)
        del self._buys[buy_offer_id]
        events: list[Event] = []
        sells: dict[str, _Sell] = {}
        for sell in buy.placed.values():
            sells[sell.offer.offer_id] = sell
        freed: dict[str, _Buy] = {}
        for sell in sorted(sells.values(), key=_sell_seq):
            # an all-or-nothing loan loses its full subscription with any one bid: all of them go
            bids = (
                list(sell.placed.values())
                if sell.offer.all_or_nothing
                else [p for p in sell.placed.values() if p[1] is buy]
            )
            for other in self._roll_back(market, sell, bids, reason, events):
                freed[other.offer.buy_offer_id] = other
        freed.pop(buy_offer_id, None)
        self._withdrawn.add(buy_offer_id)
        self._changes.withdrawn.append(buy_offer_id)
        for sell in sorted(sells.values(), key=_sell_seq):
            if sell.offer.offer_id in self._sells:
                market.unrest(sell)
                self._sell_to_demand(market, sell, events)
                market.rest(sell)
                self._maybe_finish_sell(sell)
        self._offer_resting(market, list(freed.values()), events)
        return events

    def confirm(self, offer_id: str) -> list[Event]:
        """Confirm every unconfirmed bid on a sell offer: they become investments (``LoanFunded``)."""
        sell = self._sells.get(offer_id)
        if sell is None:
            if offer_id in self._withdrawn:
                raise OfferWithdrawnError(f"sell offer {offer_id} was withdrawn", record=offer_id)
            raise UnknownOfferError(f"no sell offer {offer_id}", record=offer_id)
        if not sell.placed:
            return []
        bid_ids = tuple(sell.placed)
        confirmed = 0
        for bid_id, (bid, buy) in sell.placed.items():
            confirmed += bid.amount
            del buy.placed[bid_id]
            if buy.remaining < buy.ticket and not buy.placed:
                self._maybe_finish_buy(buy)
        sell.confirmed += confirmed
        sell.placed.clear()
        offer = sell.offer
        if sell.remaining <= 0:
            self._maybe_finish_sell(sell)
        return [LoanFunded(offer.lender_id, offer.loan_id, offer.loan_version, offer.currency, bid_ids)]

    def drain_changes(self) -> Changes:
        """Offers added, withdrawn and let go (sold out or filled, and settled) since the last call."""
        changes, self._changes = self._changes, Changes()
        return changes

    # ------------------------------------------------------------------ queries

    def sell_remaining(self, offer_id: str) -> int:
        """What is still unsold of a live sell offer."""
        sell = self._sells.get(offer_id)
        if sell is None:
            raise UnknownOfferError(f"no sell offer {offer_id}", record=offer_id)
        return sell.remaining

    def buy_remaining(self, buy_offer_id: str) -> int:
        """What a live buy offer still wants."""
        buy = self._buys.get(buy_offer_id)
        if buy is None:
            raise UnknownOfferError(f"no buy offer {buy_offer_id}", record=buy_offer_id)
        return buy.remaining

    def live_offer_of(self, lender_id: str, loan_id: str) -> str | None:
        """The id of the loan's live sell offer (its latest version still in the books), if any."""
        return self._by_loan.get((lender_id, loan_id))

    def has_sell(self, offer_id: str) -> bool:
        """True while the sell offer is live (not sold out and settled, not withdrawn)."""
        return offer_id in self._sells

    def open_sell_ids(self) -> list[str]:
        return list(self._sells)

    def open_buy_ids(self) -> list[str]:
        return list(self._buys)

    def snapshot(self) -> dict[str, object]:
        """A canonical picture of the books and unsettled bids; two matchers in the same state give equal ones."""
        markets: dict[str, object] = {}
        for currency, m in sorted(self._markets.items()):
            queues = sorted(
                (repr(sorted(d.criteria.to_dict().items())), tuple(d.queue))
                for d in m.demand.values()
                if d.queue
            )
            resting = tuple(m.resting)
            if queues or resting or m.aon:
                markets[currency] = {"queues": tuple(queues), "resting": resting, "aon": tuple(m.aon)}
        sells = tuple(
            sorted(
                (
                    s.offer.offer_id,
                    s.remaining,
                    s.confirmed,
                    tuple(sorted(s.placed)),
                    s.resting,
                    tuple(sorted(s.by_portfolio.items())),
                )
                for s in self._sells.values()
            )
        )
        buys = tuple(
            sorted((b.offer.buy_offer_id, b.remaining, tuple(sorted(b.placed))) for b in self._buys.values())
        )
        return {"markets": markets, "sells": sells, "buys": buys}

    # ------------------------------------------------------------------ rebuild

    @classmethod
    def restore(cls, state: DurableState) -> Matcher:
        """Rebuild the books from the durable record, without matching anything anew."""
        matcher = cls()
        top = 0
        for seq, offer in state.sells:
            sell = _Sell(offer, seq)
            matcher._sells[offer.offer_id] = sell
            matcher._by_loan[(offer.lender_id, offer.loan_id)] = offer.offer_id
            matcher._market(offer.currency)
            top = max(top, seq)
        for seq, buy_offer in state.buys:
            market = matcher._market(buy_offer.currency)
            buy = _Buy(buy_offer, seq, market.demand_for(buy_offer.criteria))
            matcher._buys[buy_offer.buy_offer_id] = buy
            if market.smallest_ticket is None or buy_offer.min_ticket < market.smallest_ticket:
                market.smallest_ticket = buy_offer.min_ticket
            top = max(top, seq)
        matches: dict[str, set[str]] = {}
        for record in state.bids:
            bid = record.bid
            seller = matcher._sells.get(record.sell_offer_id)
            owner = matcher._buys.get(bid.buy_offer_id)
            if seller is not None:
                seller.bid_count += 1
                matches.setdefault(record.sell_offer_id, set()).add(record.match_id)
            if record.status == "rolled_back":
                continue
            if owner is not None:
                owner.remaining -= bid.amount
            if seller is None:
                continue
            seller.remaining -= bid.amount
            seller.by_portfolio[bid.portfolio_id] = seller.by_portfolio.get(bid.portfolio_id, 0) + bid.amount
            if record.status == "confirmed":
                seller.confirmed += bid.amount
                continue
            if owner is None:
                raise UnknownOfferError(f"bid {bid.bid_id} names no open buy offer", record=bid.bid_id)
            seller.placed[bid.bid_id] = (bid, owner)
            owner.placed[bid.bid_id] = seller
        for offer_id, ids in matches.items():
            matcher._sells[offer_id].match_count = len(ids)
        for buy in sorted(matcher._buys.values(), key=_buy_seq):
            if buy.remaining >= buy.ticket:
                matcher._markets[buy.offer.currency].enqueue(buy)
        for sell in sorted(matcher._sells.values(), key=_sell_seq):
            matcher._markets[sell.offer.currency].rest(sell)
        matcher._seq = top
        return matcher

    # ------------------------------------------------------------------ internals

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _market(self, currency: str) -> _Market:
        market = self._markets.get(currency)
        if market is None:
            market = self._markets[currency] = _Market(currency)
        return market

    def _check_sell(self, offer: SellOffer) -> None:
        if offer.offer_id in self._sells:
            raise DuplicateOfferError(f"sell offer {offer.offer_id} already added", record=offer.offer_id)
        if offer.offer_id in self._withdrawn:
            raise OfferWithdrawnError(f"sell offer {offer.offer_id} was withdrawn", record=offer.offer_id)
        if offer.amount < 0:
            raise InvalidOfferError("offered amount is negative", record=offer.offer_id, field="amount")
        if offer.margin < 0 or offer.margin > offer.lender_rate:
            raise InvalidOfferError(
                f"margin {offer.margin} outside [0, lender rate {offer.lender_rate}]",
                record=offer.offer_id,
                field="margin",
            )

    def _check_buy(self, offer: BuyOffer) -> None:
        record = offer.buy_offer_id
        if record in self._buys or record in self._withdrawn:
            raise DuplicateOfferError(f"buy offer {record} already added", record=record)
        if offer.min_ticket <= 0:
            raise InvalidOfferError("minimum ticket must be positive", record=record, field="min_ticket")
        if offer.per_loan_cap < offer.min_ticket:
            raise InvalidOfferError(
                "per-loan cap is below the minimum ticket", record=record, field="per_loan_cap"
            )
        if offer.amount < 0:
            raise InvalidOfferError("amount is negative", record=record, field="amount")
        if offer.criteria.lenders_in is not None and not offer.criteria.lenders_in:
            raise InvalidOfferError(
                "lenders_in is empty: nothing can match", record=record, field="lenders_in"
            )

    def _allocate(
        self,
        market: _Market,
        sell: _Sell,
        queues: Iterable[_Demand],
        only: dict[_Demand, list[_Buy]] | None = None,
    ) -> list[Fill]:
        """The fills this loan would get from ``queues`` (nothing is changed): the hot loop of the matcher.

        With ``only``, just those buy offers of each queue are tried (arriving demand meeting resting loans).
        """
        left = sell.remaining
        floor = market.smallest_ticket or 1
        if left < floor:
            return []
        rate = sell.investor_rate
        # what each portfolio holds of this loan, with what this allocation adds
        taken = dict(sell.by_portfolio) if sell.by_portfolio else {}
        fills: list[Fill] = []
        for demand in queues:
            if demand.min_rate > rate or not demand.queue:
                continue
            if only is None:
                buys: Iterable[_Buy] = demand.queue.values()
            else:
                chosen = only.get(demand)
                if chosen is None:
                    continue
                buys = chosen
            for buy in buys:
                amount = buy.remaining
                if amount > left:
                    amount = left
                room = buy.cap - taken.get(buy.portfolio, 0)
                if amount > room:
                    amount = room
                amount -= amount % buy.ticket
                if amount <= 0:
                    continue
                fills.append((buy, amount))
                taken[buy.portfolio] = taken.get(buy.portfolio, 0) + amount
                left -= amount
                if left < floor:
                    return fills
        return fills

    def _apply(self, market: _Market, sell: _Sell, fills: list[Fill], events: list[Event]) -> None:
        if not fills:
            return
        offer = sell.offer
        sell.match_count += 1
        match_id = f"{offer.offer_id}@{sell.match_count}"
        lender_rate = offer.lender_rate
        investor_rate = sell.investor_rate
        margin = offer.margin
        bids: list[Bid] = []
        placed = sell.placed
        by_portfolio = sell.by_portfolio
        count = sell.bid_count
        prefix = offer.offer_id + "#"
        for buy, amount in fills:
            count += 1
            b = buy.offer
            bid = Bid(
                prefix + str(count),
                b.buy_offer_id,
                b.portfolio_id,
                b.investor_id,
                amount,
                investor_rate,
                lender_rate,
                margin,
            )
            bids.append(bid)
            placed[bid.bid_id] = (bid, buy)
            buy.placed[bid.bid_id] = sell
            by_portfolio[buy.portfolio] = by_portfolio.get(buy.portfolio, 0) + amount
            left = buy.remaining - amount
            buy.remaining = left
            if left < buy.ticket:
                buy.demand.queue.pop(b.buy_offer_id, None)
        sell.bid_count = count
        sell.remaining -= sum(bid.amount for bid in bids)
        events.append(
            OfferMatched(
                match_id,
                offer.lender_id,
                offer.loan_id,
                offer.loan_version,
                offer.currency,
                offer.all_or_nothing,
                tuple(bids),
                offer.offer_id,
            )
        )

    def _sell_to_demand(self, market: _Market, sell: _Sell, events: list[Event]) -> None:
        if not sell.offer.all_or_nothing:
            self._sell_partial(market, sell, market.queues_of(sell), None, events)
            return
        fills = self._allocate(market, sell, market.queues_of(sell))
        if sum(amount for _, amount in fills) == sell.remaining:
            self._apply(market, sell, fills, events)

    def _sell_partial(
        self,
        market: _Market,
        sell: _Sell,
        queues: list[_Demand],
        only: dict[_Demand, list[_Buy]] | None,
        events: list[Event],
    ) -> None:
        """Sell a partial-funding loan as far as demand goes: :meth:`_allocate` and :meth:`_apply` in one
        pass, because this is the path almost every fill takes."""
        left = sell.remaining
        floor = market.smallest_ticket or 1
        if left < floor:
            return
        offer = sell.offer
        rate = sell.investor_rate
        lender_rate = offer.lender_rate
        margin = offer.margin
        taken = sell.by_portfolio
        placed = sell.placed
        prefix = offer.offer_id + "#"
        count = sell.bid_count
        bids: list[Bid] = []
        for demand in queues:
            if demand.min_rate > rate:
                continue
            queue = demand.queue
            if not queue:
                continue
            if only is None:
                buys: Iterable[_Buy] = queue.values()
            else:
                chosen = only.get(demand)
                if chosen is None:
                    continue
                buys = chosen
            spent: list[_Buy] = []
            for buy in buys:
                amount = buy.remaining
                if amount > left:
                    amount = left
                portfolio = buy.portfolio
                have = taken.get(portfolio, 0)
                room = buy.cap - have
                if amount > room:
                    amount = room
                ticket = buy.ticket
                amount -= amount % ticket
                if amount <= 0:
                    continue
                count += 1
                bid_id = prefix + str(count)
                bid = Bid(bid_id, buy.id, portfolio, buy.investor, amount, rate, lender_rate, margin)
                bids.append(bid)
                placed[bid_id] = (bid, buy)
                buy.placed[bid_id] = sell
                taken[portfolio] = have + amount
                buy.remaining -= amount
                if buy.remaining < ticket:
                    spent.append(buy)
                left -= amount
                if left < floor:
                    break
            for buy in spent:
                queue.pop(buy.id, None)
            if left < floor:
                break
        if not bids:
            return
        sell.bid_count = count
        sell.remaining = left
        sell.match_count += 1
        events.append(
            OfferMatched(
                f"{offer.offer_id}@{sell.match_count}",
                offer.lender_id,
                offer.loan_id,
                offer.loan_version,
                offer.currency,
                False,
                tuple(bids),
                offer.offer_id,
            )
        )

    def _offer_resting(self, market: _Market, arriving: list[_Buy], events: list[Event]) -> None:
        """Offer the resting loans to arriving demand: all-or-nothing loans by sellability, then the others
        oldest first; only the arriving buy offers are tried (the rest had their chance)."""
        only: dict[_Demand, list[_Buy]] = {}
        for buy in sorted(arriving, key=_buy_seq):
            if buy.remaining >= buy.ticket and self._buys.get(buy.offer.buy_offer_id) is buy:
                only.setdefault(buy.demand, []).append(buy)
        if not only:
            return
        accepted = market.resting_accepted_by(only)
        whole = [sell for sell in accepted if sell.offer.all_or_nothing]
        if whole:
            self._retry_all_or_nothing(market, whole, events)
        sold_out: list[_Sell] = []
        for sell in accepted:
            if sell.offer.all_or_nothing or not sell.resting:
                continue
            self._sell_partial(market, sell, market.queues_of(sell), only, events)
            if sell.remaining <= 0:
                sold_out.append(sell)
        for sell in sold_out:
            market.unrest(sell)
            self._maybe_finish_sell(sell)

    def _retry_all_or_nothing(self, market: _Market, candidates: list[_Sell], events: list[Event]) -> None:
        """Try resting all-or-nothing loans that arriving demand accepts, most sellable first."""
        ranked: list[tuple[int, int, _Sell]] = []
        capacities: dict[_Demand, int] = {}
        for sell in candidates:
            coverage = 0
            for demand in market.queues_of(sell):
                if demand.min_rate <= sell.investor_rate:
                    capacity = capacities.get(demand)
                    if capacity is None:
                        capacity = capacities[demand] = demand.capacity()
                    coverage += capacity
            if coverage >= sell.remaining > 0:
                ranked.append((-(coverage * 1_000_000 // sell.remaining), sell.seq, sell))
        ranked.sort(key=lambda item: (item[0], item[1]))
        for _, _, sell in ranked:
            fills = self._allocate(market, sell, market.queues_of(sell))
            if sum(amount for _, amount in fills) == sell.remaining:
                self._apply(market, sell, fills, events)
                market.unrest(sell)

    def _roll_back(
        self, market: _Market, sell: _Sell, bids: list[tuple[Bid, _Buy]], reason: str, events: list[Event]
    ) -> list[_Buy]:
        """Undo unconfirmed bids on one loan; returns the buy offers that got demand back."""
        if not bids:
            return []
        freed: list[_Buy] = []
        for bid, buy in bids:
            del sell.placed[bid.bid_id]
            del buy.placed[bid.bid_id]
            sell.remaining += bid.amount
            left = sell.by_portfolio[bid.portfolio_id] - bid.amount
            if left:
                sell.by_portfolio[bid.portfolio_id] = left
            else:
                del sell.by_portfolio[bid.portfolio_id]
            if self._buys.get(bid.buy_offer_id) is buy:
                market.dequeue(buy)
                buy.remaining += bid.amount
                if buy.remaining >= buy.ticket:
                    market.enqueue(buy)
                freed.append(buy)
            else:
                buy.remaining += bid.amount
        offer = sell.offer
        events.append(
            BidsRolledBack(offer.lender_id, offer.loan_id, reason, tuple(bid.bid_id for bid, _ in bids))
        )
        return freed

    def _forget_loan(self, offer: SellOffer) -> None:
        key = (offer.lender_id, offer.loan_id)
        if self._by_loan.get(key) == offer.offer_id:
            del self._by_loan[key]

    def _maybe_finish_sell(self, sell: _Sell) -> None:
        if sell.remaining <= 0 and not sell.placed and self._sells.get(sell.offer.offer_id) is sell:
            del self._sells[sell.offer.offer_id]
            self._forget_loan(sell.offer)
            self._changes.finished.append(sell.offer.offer_id)

    def _maybe_finish_buy(self, buy: _Buy) -> None:
        if buy.remaining < buy.ticket and not buy.placed and self._buys.get(buy.offer.buy_offer_id) is buy:
            del self._buys[buy.offer.buy_offer_id]
            self._changes.finished.append(buy.offer.buy_offer_id)
