"""The demand index of one currency's book: who accepts which loan, found without looking at the rest.

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
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Callable, Iterable
from decimal import Decimal

from tranche.matching.criteria import Criteria, LoanTraits
from tranche.matching.events import Bid
from tranche.matching.values import BuyOffer, SellOffer


class Demand:
    """All live buy offers with equal criteria, FIFO by arrival."""

    __slots__ = ("bit", "criteria", "min_rate", "order", "queue")

    def __init__(self, criteria: Criteria, order: int) -> None:
        self.criteria = criteria
        self.min_rate = criteria.min_investor_rate
        self.order = order
        self.bit = order  # its position in the market's masks
        self.queue: dict[str, LiveBuy] = {}

    def capacity(self) -> int:
        """What all queued offers could take from one loan: the numerator of sellability."""
        return sum(buy.takeable() for buy in self.queue.values())


class LiveBuy:
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

    def __init__(self, offer: BuyOffer, seq: int, demand: Demand) -> None:
        self.offer = offer
        self.seq = seq
        self.demand = demand
        self.remaining = offer.amount
        self.ticket = offer.min_ticket
        self.cap = offer.per_loan_cap
        self.portfolio = offer.portfolio_id
        self.id = offer.buy_offer_id
        self.investor = offer.investor_id
        self.placed: dict[str, LiveSell] = {}  # unconfirmed bids: bid id -> the loan's offer

    def takeable(self) -> int:
        amount = min(self.remaining, self.cap)
        return amount - amount % self.ticket


class LiveSell:
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
        self.placed: dict[str, tuple[Bid, LiveBuy]] = {}  # unconfirmed bids
        self.by_portfolio: dict[str, int] = {}
        self.bid_count = 0
        self.match_count = 0
        self.resting = False
        self.mask = 0  # the queues that accept it, as of the market's generation mask_generation
        self.mask_generation = -1


def _in_range(value: int, low: int | None, high: int | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


# One test per dimension of a loan, in the order of the keys in CurrencyBook.mask_of.
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


def queue_order(d: Demand) -> tuple[Decimal, int]:
    return (-d.min_rate, d.order)


def sell_seq(s: LiveSell) -> int:
    return s.seq


def buy_seq(b: LiveBuy) -> int:
    return b.seq


class CurrencyBook:
    """The book of one currency."""

    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.demand: dict[Criteria, Demand] = {}
        self.by_bit: list[Demand] = []
        self.cuts: tuple[list[int], list[int], list[int], list[int]] = ([], [], [], [])
        self.dimension_masks: tuple[dict[object, int], ...] = tuple({} for _ in _DIMENSIONS)
        self.by_mask: dict[int, list[Demand]] = {}
        self.resting: dict[str, LiveSell] = {}
        self.aon: dict[str, LiveSell] = {}
        # resting loans (both kinds) by the bit set of the queues that accept them, so that arriving demand
        # finds the loans it accepts without looking at the others; rebuilt lazily when bits change
        self.index: dict[int, dict[str, LiveSell]] = {}
        self.index_stale = False
        self.generation = 0  # moves on whenever the bits are renumbered
        # a loan's remainder below every ticket ever seen cannot be sold: the fill loop stops there
        self.smallest_ticket: int | None = None

    def demand_for(self, criteria: Criteria) -> Demand:
        found = self.demand.get(criteria)
        if found is not None:
            return found
        created = Demand(criteria, len(self.demand))
        self.demand[criteria] = created
        # bits are ranked most demanding first, so a mask lists its queues in serving order
        self.by_bit.append(created)
        self.by_bit.sort(key=queue_order)
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

    def queues_of(self, sell: LiveSell) -> list[Demand]:
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

    def resting_accepted_by(self, demands: Iterable[Demand]) -> list[LiveSell]:
        """The resting loans (both kinds) that any of these queues accepts, oldest first."""
        if self.index_stale:
            self.index_stale = False
            for sell in (*self.resting.values(), *self.aon.values()):
                self._index(sell)
        bits = 0
        for demand in demands:
            bits |= 1 << demand.bit
        found = [sell for mask, group in self.index.items() if mask & bits for sell in group.values()]
        found.sort(key=sell_seq)
        return found

    def _index(self, sell: LiveSell) -> None:
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

    def enqueue(self, buy: LiveBuy) -> None:
        queue = buy.demand.queue
        key = buy.offer.buy_offer_id
        if queue and next(reversed(queue.values())).seq > buy.seq:
            # a rolled-back offer goes back to its place in the FIFO, as a rebuild would put it
            queue[key] = buy
            ordered = sorted(queue.values(), key=buy_seq)
            queue.clear()
            queue.update((b.offer.buy_offer_id, b) for b in ordered)
        else:
            queue[key] = buy

    def dequeue(self, buy: LiveBuy) -> None:
        buy.demand.queue.pop(buy.offer.buy_offer_id, None)

    def rest(self, sell: LiveSell) -> None:
        if sell.resting or sell.remaining <= 0:
            return
        sell.resting = True
        if not self.index_stale:
            self._index(sell)
        # arrival order is the sells' seq: whoever needs it sorts by it (a rolled-back loan rests again late)
        if sell.offer.all_or_nothing:
            self.aon[sell.offer.offer_id] = sell
            return
        self.resting[sell.offer.offer_id] = sell

    def unrest(self, sell: LiveSell) -> None:
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
