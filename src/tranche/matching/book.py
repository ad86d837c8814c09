"""The order books: sell offers (parts of loans) against buy offers (buckets' demand), one book per currency.

Pure and in memory: no I/O, no clock. Every call returns the events it caused; the durable record of offers
and bids is kept by the caller, and :meth:`Matcher.restore` rebuilds the same books from it.

The values the books hold are in :mod:`tranche.matching.values`; the index that finds the demand accepting a loan
is in :mod:`tranche.matching.index`. This module holds the rules.

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

from collections.abc import Container, Iterable, Mapping, Sequence

from tranche.matching.errors import (
    DuplicateOfferError,
    InvalidOfferError,
    OfferWithdrawnError,
    UnknownOfferError,
)
from tranche.matching.events import Bid, BidsRolledBack, LoanFunded, OfferMatched
from tranche.matching.index import CurrencyBook, Demand, LiveBuy, LiveSell, buy_seq, sell_seq
from tranche.matching.values import BuyOffer, Changes, DurableState, MatchEvent, SellOffer

Fill = tuple[LiveBuy, int]


def offer_of_bid(bid_id: str) -> str:
    """The sell offer a bid was placed on: bid ids are ``<offer id>#<n>``."""
    return bid_id.rpartition("#")[0]


class Matcher:
    """The in-memory order books of every market, and the bids not yet settled.

    Offers are immutable: a loan that changes is withdrawn and offered again as a new offer (a new loan
    version); a portfolio that is edited withdraws its buy offers and issues new ones.
    """

    def __init__(self) -> None:
        self._markets: dict[str, CurrencyBook] = {}
        self._sells: dict[str, LiveSell] = {}
        self._by_loan: dict[tuple[str, str], str] = {}  # (lender, loan) -> its live offer
        self._buys: dict[str, LiveBuy] = {}
        self._withdrawn: set[str] = set()
        self._seq = 0
        self._changes = Changes()

    # ------------------------------------------------------------------ public commands

    def add_sell(self, offer: SellOffer) -> list[MatchEvent]:
        """Offer (part of) a loan: sell it to the resting demand as far as it goes, rest the remainder."""
        self._check_sell(offer)
        sell = LiveSell(offer, self._next_seq())
        self._sells[offer.offer_id] = sell
        self._by_loan[(offer.lender_id, offer.loan_id)] = offer.offer_id
        self._changes.sells.append((sell.seq, offer))
        market = self._market(offer.currency)
        events: list[MatchEvent] = []
        self._sell_to_demand(market, sell, events)
        market.rest(sell)
        self._maybe_finish_sell(sell)
        return events

    def add_buys(self, offers: Iterable[BuyOffer]) -> list[MatchEvent]:
        """Place buckets' demand: buy resting loans for each, then retry resting all-or-nothing loans."""
        events: list[MatchEvent] = []
        added: list[LiveBuy] = []
        for offer in offers:
            self._check_buy(offer)
            market = self._market(offer.currency)
            buy = LiveBuy(offer, self._next_seq(), market.demand_for(offer.criteria))
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

    def add_buy(self, offer: BuyOffer) -> list[MatchEvent]:
        """One buy offer; see :meth:`add_buys`."""
        return self.add_buys((offer,))

    def withdraw_sell(self, offer_id: str, reason: str) -> list[MatchEvent]:
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
        events: list[MatchEvent] = []
        freed = self._roll_back(market, sell, list(sell.placed.values()), reason, events)
        del self._sells[offer_id]
        self._forget_loan(sell.offer)
        self._withdrawn.add(offer_id)
        self._changes.withdrawn.append(offer_id)
        self._offer_resting(market, freed, events)
        return events

    def withdraw_buy(self, buy_offer_id: str, reason: str) -> list[MatchEvent]:
        """Withdraw a bucket's demand (portfolio edited, paused or closed): roll back its unconfirmed bids
        and sell the loans they were on again. An offer the books no longer hold (withdrawn before, or filled
        and settled) changes nothing."""
        buy = self._buys.get(buy_offer_id)
        if buy is None:
            # already withdrawn, or filled and settled (then there is nothing left to undo)
            return []
        events: list[MatchEvent] = []
        sells, freed = self._take_buy(buy, reason, events)
        self._offer_again(self._markets[buy.offer.currency], sells, freed, events)
        return events

    def confirm(self, offer_id: str) -> list[MatchEvent]:
        """Confirm every unconfirmed bid on a sell offer: they become investments (``LoanFunded``)."""
        sell = self._sells.get(offer_id)
        if sell is None:
            if offer_id in self._withdrawn:
                raise OfferWithdrawnError(f"sell offer {offer_id} was withdrawn", record=offer_id)
            raise UnknownOfferError(f"no sell offer {offer_id}", record=offer_id)
        funded = self._confirm(sell, list(sell.placed))
        return [] if funded is None else [funded]

    def settle(
        self,
        matches: Sequence[OfferMatched],
        reserved: Container[str],
        refused: Mapping[str, str],
        withdraw: Iterable[str] = (),
        withdraw_reason: str = "insufficient_cash",
    ) -> list[MatchEvent]:
        """Apply the ledger's answer about the bids ``matches`` placed, as one step.

        The ``refused`` bids (bid id → reason) are rolled back, all the bids of an all-or-nothing loan with any
        one of them (its reservation is all or nothing too); the buy offers in ``withdraw`` are taken off the
        books (their investors cannot pay for them); the ``reserved`` bids are confirmed (``LoanFunded``, one per
        loan); then what was rolled back is offered again to the demand that is left, which may place new bids.
        A bid the answer names neither way stays placed; one no longer placed (settled before: a repeated
        answer) is passed over.
        """
        events: list[MatchEvent] = []
        affected: dict[str, dict[str, LiveSell]] = {}  # currency -> sells to offer again
        freed: dict[str, dict[str, LiveBuy]] = {}  # currency -> buys that got demand back
        refused_by_sell: dict[str, list[str]] = {}
        for bid_id in refused:
            refused_by_sell.setdefault(offer_of_bid(bid_id), []).append(bid_id)
        for offer_id, bid_ids in sorted(refused_by_sell.items()):
            sell = self._sells.get(offer_id)
            if sell is None:
                continue
            bids = (
                list(sell.placed.values())
                if sell.offer.all_or_nothing
                else [sell.placed[b] for b in bid_ids if b in sell.placed]
            )
            if not bids:
                continue
            market = self._markets[sell.offer.currency]
            market.unrest(sell)
            affected.setdefault(market.currency, {})[offer_id] = sell
            for other in self._roll_back(market, sell, bids, refused[bid_ids[0]], events):
                freed.setdefault(market.currency, {})[other.offer.buy_offer_id] = other
        for buy_offer_id in withdraw:
            buy = self._buys.get(buy_offer_id)
            if buy is None:
                continue
            currency = buy.offer.currency
            sells, others = self._take_buy(buy, withdraw_reason, events)
            for sell in sells:
                affected.setdefault(currency, {})[sell.offer.offer_id] = sell
            for other in others:
                freed.setdefault(currency, {})[other.offer.buy_offer_id] = other
            for group in freed.values():
                group.pop(buy_offer_id, None)
        for match in matches:
            sell = self._sells.get(match.sell_offer_id)
            if sell is not None and sell.placed:
                funded = self._confirm(sell, [b.bid_id for b in match.bids if b.bid_id in reserved])
                if funded is not None:
                    events.append(funded)
        for currency in sorted(set(affected) | set(freed)):
            self._offer_again(
                self._markets[currency],
                list(affected.get(currency, {}).values()),
                list(freed.get(currency, {}).values()),
                events,
            )
        return events

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

    def buys_of(self, investor_id: str, currency: str) -> list[str]:
        """The live buy offers of an investor in one currency, oldest first."""
        found = [b for b in self._buys.values() if b.investor == investor_id and b.offer.currency == currency]
        return [b.id for b in sorted(found, key=buy_seq)]

    def unsettled(self) -> list[OfferMatched]:
        """Every placed bid not yet confirmed or rolled back, one match per loan: what the ledger must still
        answer for (after a restart, or when it could not be asked)."""
        matches = []
        for sell in sorted(self._sells.values(), key=sell_seq):
            if sell.placed:
                offer = sell.offer
                matches.append(
                    OfferMatched(
                        f"{offer.offer_id}@unsettled",
                        offer.lender_id,
                        offer.loan_id,
                        offer.loan_version,
                        offer.currency,
                        offer.all_or_nothing,
                        tuple(bid for bid, _ in sell.placed.values()),
                        offer.offer_id,
                    )
                )
        return matches

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
            resting = tuple(s.offer.offer_id for s in sorted(m.resting.values(), key=sell_seq))
            aon = tuple(s.offer.offer_id for s in sorted(m.aon.values(), key=sell_seq))
            if queues or resting or aon:
                markets[currency] = {"queues": tuple(queues), "resting": resting, "aon": aon}
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
            sell = LiveSell(offer, seq)
            matcher._sells[offer.offer_id] = sell
            matcher._by_loan[(offer.lender_id, offer.loan_id)] = offer.offer_id
            matcher._market(offer.currency)
            top = max(top, seq)
        for seq, buy_offer in state.buys:
            market = matcher._market(buy_offer.currency)
            buy = LiveBuy(buy_offer, seq, market.demand_for(buy_offer.criteria))
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
        for buy in sorted(matcher._buys.values(), key=buy_seq):
            if buy.remaining >= buy.ticket:
                matcher._markets[buy.offer.currency].enqueue(buy)
        for sell in sorted(matcher._sells.values(), key=sell_seq):
            matcher._markets[sell.offer.currency].rest(sell)
        matcher._seq = top
        return matcher

    # ------------------------------------------------------------------ internals

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _market(self, currency: str) -> CurrencyBook:
        market = self._markets.get(currency)
        if market is None:
            market = self._markets[currency] = CurrencyBook(currency)
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
        market: CurrencyBook,
        sell: LiveSell,
        queues: Iterable[Demand],
        only: dict[Demand, list[LiveBuy]] | None = None,
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
                buys: Iterable[LiveBuy] = demand.queue.values()
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

    def _apply(
        self, market: CurrencyBook, sell: LiveSell, fills: list[Fill], events: list[MatchEvent]
    ) -> None:
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

    def _sell_to_demand(self, market: CurrencyBook, sell: LiveSell, events: list[MatchEvent]) -> None:
        if not sell.offer.all_or_nothing:
            self._sell_partial(market, sell, market.queues_of(sell), None, events)
            return
        fills = self._allocate(market, sell, market.queues_of(sell))
        if sum(amount for _, amount in fills) == sell.remaining:
            self._apply(market, sell, fills, events)

    def _sell_partial(
        self,
        market: CurrencyBook,
        sell: LiveSell,
        queues: list[Demand],
        only: dict[Demand, list[LiveBuy]] | None,
        events: list[MatchEvent],
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
                buys: Iterable[LiveBuy] = queue.values()
            else:
                chosen = only.get(demand)
                if chosen is None:
                    continue
                buys = chosen
            spent: list[LiveBuy] = []
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

    def _offer_resting(self, market: CurrencyBook, arriving: list[LiveBuy], events: list[MatchEvent]) -> None:
        """Offer the resting loans to arriving demand: all-or-nothing loans by sellability, then the others
        oldest first; only the arriving buy offers are tried (the rest had their chance)."""
        only: dict[Demand, list[LiveBuy]] = {}
        for buy in sorted(arriving, key=buy_seq):
            if buy.remaining >= buy.ticket and self._buys.get(buy.offer.buy_offer_id) is buy:
                only.setdefault(buy.demand, []).append(buy)
        if not only:
            return
        accepted = market.resting_accepted_by(only)
        whole = [sell for sell in accepted if sell.offer.all_or_nothing]
        if whole:
            self._retry_all_or_nothing(market, whole, events)
        sold_out: list[LiveSell] = []
        for sell in accepted:
            if sell.offer.all_or_nothing or not sell.resting:
                continue
            self._sell_partial(market, sell, market.queues_of(sell), only, events)
            if sell.remaining <= 0:
                sold_out.append(sell)
        for sell in sold_out:
            market.unrest(sell)
            self._maybe_finish_sell(sell)

    def _retry_all_or_nothing(
        self, market: CurrencyBook, candidates: list[LiveSell], events: list[MatchEvent]
    ) -> None:
        """Try resting all-or-nothing loans that arriving demand accepts, most sellable first."""
        ranked: list[tuple[int, int, LiveSell]] = []
        capacities: dict[Demand, int] = {}
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
        self,
        market: CurrencyBook,
        sell: LiveSell,
        bids: list[tuple[Bid, LiveBuy]],
        reason: str,
        events: list[MatchEvent],
    ) -> list[LiveBuy]:
        """Undo unconfirmed bids on one loan; returns the buy offers that got demand back."""
        if not bids:
            return []
        freed: list[LiveBuy] = []
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

    def _take_buy(
        self, buy: LiveBuy, reason: str, events: list[MatchEvent]
    ) -> tuple[list[LiveSell], list[LiveBuy]]:
        """Take a buy offer off the books and roll back its unconfirmed bids; returns the loans they were on
        and the other buy offers that got demand back (an all-or-nothing loan's other bids go with it)."""
        market = self._markets[buy.offer.currency]
        market.dequeue(buy)
        buy_offer_id = buy.offer.buy_offer_id
        del self._buys[buy_offer_id]
        sells: dict[str, LiveSell] = {}
        for sell in buy.placed.values():
            sells[sell.offer.offer_id] = sell
        freed: dict[str, LiveBuy] = {}
        for sell in sorted(sells.values(), key=sell_seq):
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
        return sorted(sells.values(), key=sell_seq), list(freed.values())

    def _offer_again(
        self, market: CurrencyBook, sells: list[LiveSell], freed: list[LiveBuy], events: list[MatchEvent]
    ) -> None:
        """Sell loans that got parts back to the demand, then offer the resting loans to demand that got
        amounts back, so that the books are quiescent again."""
        for sell in sorted(sells, key=sell_seq):
            if sell.offer.offer_id in self._sells:
                market.unrest(sell)
                self._sell_to_demand(market, sell, events)
                market.rest(sell)
                self._maybe_finish_sell(sell)
        self._offer_resting(market, freed, events)

    def _confirm(self, sell: LiveSell, bid_ids: Iterable[str]) -> LoanFunded | None:
        """Confirm these unconfirmed bids on one loan (others are passed over): they become investments."""
        confirmed: list[str] = []
        amount = 0
        for bid_id in bid_ids:
            entry = sell.placed.pop(bid_id, None)
            if entry is None:
                continue
            bid, buy = entry
            amount += bid.amount
            del buy.placed[bid_id]
            confirmed.append(bid_id)
            if buy.remaining < buy.ticket and not buy.placed:
                self._maybe_finish_buy(buy)
        if not confirmed:
            return None
        sell.confirmed += amount
        if sell.remaining <= 0:
            self._maybe_finish_sell(sell)
        offer = sell.offer
        return LoanFunded(
            offer.lender_id, offer.loan_id, offer.loan_version, offer.currency, tuple(confirmed)
        )

    def _forget_loan(self, offer: SellOffer) -> None:
        key = (offer.lender_id, offer.loan_id)
        if self._by_loan.get(key) == offer.offer_id:
            del self._by_loan[key]

    def _maybe_finish_sell(self, sell: LiveSell) -> None:
        if sell.remaining <= 0 and not sell.placed and self._sells.get(sell.offer.offer_id) is sell:
            del self._sells[sell.offer.offer_id]
            self._forget_loan(sell.offer)
            self._changes.finished.append(sell.offer.offer_id)

    def _maybe_finish_buy(self, buy: LiveBuy) -> None:
        if buy.remaining < buy.ticket and not buy.placed and self._buys.get(buy.offer.buy_offer_id) is buy:
            del self._buys[buy.offer.buy_offer_id]
            self._changes.finished.append(buy.offer.buy_offer_id)
