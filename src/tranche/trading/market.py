"""The market role: the matcher's books and the gap analyzer, moved one step at a time, with the ledger's
reservations in the loop.

One process of a deployment holds the books of a currency (they live in memory); every command to it holds
one lock, so the bus handlers that drive it take turns. A command is one *step*:

1. the books change (a loan offered or taken off, a portfolio's demand withdrawn, buy offers placed), and the
   matcher places bids; the step and its events are recorded (``match.<lender>.matched``);
2. **reserve, then confirm**: the placed bids are sent to the ledger, which reserves each investor's cash as
   pending transfers (the bids of an all-or-nothing loan as one linked chain: all or none). The ledger's answer
   is applied to the books in one move (:meth:`tranche.matching.MatchingService.settle`): reserved bids are
   confirmed (``match.<lender>.funded``, which the ledger posts), refused ones are rolled back
   (``match.<lender>.rolled_back``), the open demand of an investor who could not pay is withdrawn, and the
   loan parts that came back are offered at once to the demand that is left;
3. trading records the fills, and the gap analyzer plans again for the portfolios that changed, never asking
   for more than the investor's available cash: the demand of a refused investor shrinks to what it can pay,
   and a portfolio with no cash to spend waits (its state says ``insufficient_cash``) until cash arrives.

Steps 2 and 3 repeat until no bid is left placed and no portfolio issues offers. If the ledger cannot be
reached, the bids stay placed (recorded) and the next command, or the timer, asks again: a confirmed bid is
always one the ledger reserved. After a restart the books are rebuilt from the record and the placed bids are
asked for again (the ledger's reservations are idempotent by bid id).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tranche.matching import MatchEvent, MatchingService, OfferMatched, OfferWithdrawnError, SellOffer
from tranche.trading.errors import TradingError
from tranche.trading.service import TradingService

log = logging.getLogger(__name__)

INSUFFICIENT_CASH = "insufficient_cash"


@dataclass(frozen=True, slots=True)
class ReservationAnswer:
    """The ledger's answer about a batch of placed bids: ``reserved`` bid ids, ``refused`` bid id → reason."""

    reserved: frozenset[str]
    refused: Mapping[str, str] = field(default_factory=dict)


class Reservations(Protocol):
    """The ledger, as the market asks it to reserve investors' cash for placed bids."""

    def reserve(self, matches: Sequence[OfferMatched]) -> ReservationAnswer:
        """Reserve each bid's cash; raise :class:`LedgerUnavailableError` when the ledger cannot answer."""
        ...


class LedgerUnavailableError(TradingError):
    """The ledger did not answer a reservation (down, or too slow): the bids stay placed and are asked for
    again by the next step."""

    code = "ledger_unavailable"


class Market:
    """The books and the gap analyzer of the market role, driven step by step (see the module docstring)."""

    def __init__(
        self,
        trading: TradingService,
        matching: MatchingService,
        reservations: Reservations,
        *,
        max_rounds: int = 1_000,
    ) -> None:
        self.trading = trading
        self.matching = matching
        self.reservations = reservations
        self.max_rounds = max_rounds
        self.lock = threading.RLock()
        # placed bids may wait for the ledger: after a rebuild, or a step the ledger did not answer
        self._unsettled = True

    def rebuild(self, matching: MatchingService) -> None:
        """Go on with books rebuilt from the record (this process took the market over)."""
        with self.lock:
            self.matching = matching
            self._unsettled = True

    # ------------------------------------------------------------------ commands

    def offer_loans(
        self, lender_id: str, offers: Sequence[tuple[str, SellOffer | None]], reason: str = "loan changed"
    ) -> list[MatchEvent]:
        """Offer loan versions (``(loan id, offer)``; ``None``: the loan has nothing for sale any more), each
        replacing the loan's live offer, then let every active portfolio buy."""

        def offer() -> list[MatchEvent]:
            events: list[MatchEvent] = []
            for loan_id, sell in offers:
                try:
                    events += self.matching.replace_loan(lender_id, loan_id, sell, reason)
                except OfferWithdrawnError:
                    continue  # the loan was taken off the market after this version: never sold again
            return events

        return self._step(offer, None)

    def take_off(self, lender_id: str, loan_ids: Iterable[str], reason: str) -> list[MatchEvent]:
        """Loans left ``active`` (withdrawn, repaid, defaulted, written off): never sold again."""

        def take() -> list[MatchEvent]:
            events: list[MatchEvent] = []
            for loan_id in loan_ids:
                events += self.matching.replace_loan(lender_id, loan_id, None, reason)
            return events

        return self._step(take, ())

    def portfolio_changed(self, portfolio_id: str, change: str = "changed") -> list[MatchEvent]:
        """A portfolio's terms or status changed: withdraw the demand it no longer wants, then plan anew."""

        def withdraw() -> list[MatchEvent]:
            stale = self.trading.stale_offers(portfolio_id)
            events = self.matching.withdraw_buys(stale, f"portfolio {change}")
            self.trading.withdrawn(stale)
            return events

        return self._step(withdraw, [portfolio_id])

    def investor_changed(self, investor_id: str) -> list[MatchEvent]:
        """Whether an investor may buy changed (consent, suspension): its portfolios' demand follows."""

        def withdraw() -> list[MatchEvent]:
            events: list[MatchEvent] = []
            for portfolio in self.trading.list_for(investor_id):
                stale = self.trading.stale_offers(portfolio.portfolio_id)
                events += self.matching.withdraw_buys(stale, "investor may not buy")
                self.trading.withdrawn(stale)
            return events

        return self._step(withdraw, [p.portfolio_id for p in self.trading.list_for(investor_id)])

    def rebalance(self, portfolio_ids: Iterable[str] | None = None) -> list[MatchEvent]:
        """Run the gap analyzer (for every active portfolio, or for those named) until none issues offers."""
        return self._step(list, None if portfolio_ids is None else list(portfolio_ids))

    def cash_changed(self, investor_id: str, currency: str) -> list[MatchEvent]:
        """The investor's available cash changed: its open demand in that currency, sized for the cash it had,
        is withdrawn and its portfolios plan again within the cash it has now (a portfolio that waited for cash
        resumes; one whose cash shrank asks for less)."""

        def withdraw() -> list[MatchEvent]:
            ids = self.matching.buys_of(investor_id, currency)
            events = self.matching.withdraw_buys(ids, "cash changed")
            self.trading.withdrawn(ids)
            return events

        return self._step(withdraw, self.trading.active_of(investor_id, currency))

    def settle_unsettled(self) -> list[MatchEvent]:
        """Ask the ledger about bids left placed (by a restart or a step it did not answer); for a timer."""
        return self._step(list, ())

    def resync(self) -> list[MatchEvent]:
        """After a restart: settle the bids left placed, hand the matcher every open buy offer trading issued that
        it never recorded (the process stopped between the two), and let the portfolios plan."""
        return self._step(lambda: self.matching.place_buys(self.trading.open_buy_offers()), None)

    # ------------------------------------------------------------------ the step

    def _step(
        self, change: Callable[[], list[MatchEvent]], portfolios: Iterable[str] | None
    ) -> list[MatchEvent]:
        """Settle what is left over, apply ``change``, then reserve, confirm and plan until quiet.

        ``portfolios`` are those to plan for afterwards (None: every active portfolio)."""
        with self.lock:
            done: list[MatchEvent] = []
            if self._unsettled:
                done += self._cycle(self.matching.unsettled(), set())
            planned: set[str] | None = None if portfolios is None else set(portfolios)
            return done + self._cycle(change(), planned)

    def _cycle(self, events: Sequence[MatchEvent], plan: set[str] | None) -> list[MatchEvent]:
        done: list[MatchEvent] = []
        pending = list(events)
        for _ in range(self.max_rounds):
            if pending:
                done += pending
                touched = self.trading.apply(pending)
                if plan is not None:
                    plan |= touched
                matched = [e for e in pending if isinstance(e, OfferMatched)]
                if matched:
                    pending, short = self._reserve(matched)
                    if plan is not None:
                        plan |= short
                    continue
            if plan is not None and not plan:
                break
            offers = self.trading.plan_all(plan)
            if not offers:
                break
            plan = {o.portfolio_id for o in offers}
            pending = self.matching.place_buys(offers)
        else:
            log.warning("the market stopped a step after %d rounds; the next step goes on", self.max_rounds)
        self._unsettled = False
        return done

    def _reserve(self, matched: Sequence[OfferMatched]) -> tuple[list[MatchEvent], set[str]]:
        """Ask the ledger to reserve the placed bids and apply its answer to the books; returns the events and
        the portfolios whose demand was withdrawn because their investor could not pay."""
        self._unsettled = True
        answer = self.reservations.reserve(matched)
        short: set[tuple[str, str]] = set()
        for match in matched:
            for bid in match.bids:
                if bid.bid_id in answer.refused and answer.refused[bid.bid_id] == INSUFFICIENT_CASH:
                    short.add((bid.investor_id, match.currency))
        withdraw: list[str] = []
        for investor_id, currency in sorted(short):
            withdraw += self.matching.buys_of(investor_id, currency)
        if short:
            log.info(
                "investors short of cash, demand withdrawn to be planned within their cash: %s", sorted(short)
            )
        events = self.matching.settle(matched, answer.reserved, answer.refused, withdraw, INSUFFICIENT_CASH)
        return events, self.trading.withdrawn(withdraw)
