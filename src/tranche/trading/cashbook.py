"""The ledger as the market sees it, in a few dicts: investors' cash, reservations by bid, and what they fund.

The in-memory implementation of the market's ports to the ledger (:class:`~tranche.trading.market.Reservations`
and :class:`~tranche.trading.service.LedgerView`), for tests and for measuring the market without a store. It
answers as the ledger does (:meth:`tranche.ledger.LedgerService.reserve`): each bid of a partial-funding loan
alone, the bids of an all-or-nothing loan as one chain (all reserved, or none: the investor short of cash is
refused ``insufficient_cash``, the others ``all_or_nothing``); a bid reserved before answers reserved again.
Posting and voiding come from the matcher's events (:meth:`Cashbook.apply`), as the ledger's come from the bus.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from tranche.matching import BidsRolledBack, LoanFunded, MatchEvent, OfferMatched
from tranche.trading.domain import HeldPrincipal
from tranche.trading.market import LedgerUnavailableError, ReservationAnswer


class Cashbook:
    """Investors' cash and the bids it reserved and funded; ``default_cash`` is what an investor it was told
    nothing about has (None: as much as asked)."""

    def __init__(self, default_cash: int | None = None) -> None:
        self.default_cash = default_cash
        self.cash: dict[tuple[str, str], int] = {}
        self.reserved: dict[
            str, tuple[str, str, str, int]
        ] = {}  # bid -> investor, currency, portfolio, amount
        self.posted: dict[str, tuple[str, str, str, int]] = {}
        self.down = False
        self.asked = 0

    def deposit(self, investor_id: str, currency: str, amount: int) -> None:
        """Credit the investor's cash."""
        self.cash[(investor_id, currency)] = self.available(investor_id, currency) + amount

    def available(self, investor_id: str, currency: str) -> int:
        found = self.cash.get((investor_id, currency))
        if found is None:
            return 2**62 if self.default_cash is None else self.default_cash
        return found

    def funded(self, portfolio_id: str) -> Mapping[str, HeldPrincipal]:
        return {
            bid: HeldPrincipal(entry[3]) for bid, entry in self.posted.items() if entry[2] == portfolio_id
        }

    def reserve(self, matches: Sequence[OfferMatched]) -> ReservationAnswer:
        self.asked += 1
        if self.down:
            raise LedgerUnavailableError("the ledger did not answer")
        reserved: list[str] = []
        refused: dict[str, str] = {}
        known, cash = self.reserved, self.cash
        for match in matches:
            currency = match.currency
            fresh = []
            for bid in match.bids:
                if bid.bid_id in known:
                    reserved.append(bid.bid_id)  # asked again (a confirmed bid is never placed again)
                else:
                    fresh.append(bid)
            if match.all_or_nothing:
                need: dict[str, int] = {}
                for bid in fresh:
                    need[bid.investor_id] = need.get(bid.investor_id, 0) + bid.amount
                short = {i for i, amount in need.items() if self.available(i, currency) < amount}
                if short:
                    for bid in fresh:
                        refused[bid.bid_id] = (
                            "insufficient_cash" if bid.investor_id in short else "all_or_nothing"
                        )
                    continue
            for bid in fresh:
                key = (bid.investor_id, currency)
                have = cash.get(key)
                if have is None:
                    have = self.available(bid.investor_id, currency)
                if have < bid.amount:
                    refused[bid.bid_id] = "insufficient_cash"
                    continue
                cash[key] = have - bid.amount
                known[bid.bid_id] = (bid.investor_id, currency, bid.portfolio_id, bid.amount)
                reserved.append(bid.bid_id)
        return ReservationAnswer(frozenset(reserved), refused)

    def apply(self, events: Iterable[MatchEvent]) -> None:
        """What the ledger does with the matcher's events: post the funded bids, void the rolled-back ones."""
        reserved, posted = self.reserved, self.posted
        for event in events:
            if type(event) is LoanFunded:
                for bid_id in event.bid_ids:
                    posted[bid_id] = reserved.pop(bid_id)
            elif isinstance(event, BidsRolledBack):
                for bid_id in event.bid_ids:
                    entry = self.reserved.pop(bid_id, None)
                    if entry is not None:
                        self.deposit(entry[0], entry[1], entry[3])
