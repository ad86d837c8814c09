"""The ledger's handlers for other contexts' events, and the subscription that feeds them from the bus.

Matching's events settle through :class:`LedgerHandlers`: ``OfferMatched`` reserves cash, ``LoanFunded``
posts it, ``BidsRolledBack`` voids it. Every handler is idempotent (transfer ids derive from the event), so
a redelivered event changes nothing. Repayments come from loan versions (:meth:`LedgerHandlers.loan_version`):
the caller loads the version with its payments and hands it over in version order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from tranche.bus.api import Bus
from tranche.bus.codec import EventCodec
from tranche.bus.message import Message
from tranche.ledger.drift import PortfolioDrifted
from tranche.ledger.errors import ReservationNotFoundError
from tranche.ledger.service import BidsOutcome, LedgerService, RepaymentOutcome
from tranche.matching.events import BidsRolledBack, LoanFunded, OfferMatched
from tranche.shared.loan import Loan

log = logging.getLogger(__name__)

MatchingEvent = OfferMatched | LoanFunded | BidsRolledBack


class LedgerHandlers:
    """Dispatches events to the ledger service."""

    def __init__(self, service: LedgerService) -> None:
        self.service = service

    def handle(self, event: MatchingEvent) -> BidsOutcome:
        """Settle one of matching's events."""
        if isinstance(event, OfferMatched):
            outcome = self.service.on_offer_matched(event)
        elif isinstance(event, LoanFunded):
            outcome = self.service.on_loan_funded(event)
        else:
            outcome = self.service.on_bids_rolled_back(event)
        for bid_id, error in outcome.refused.items():
            if isinstance(error, ReservationNotFoundError):
                # Settle what can be, then have the event delivered again: its reservation is yet to come.
                raise error
            log.warning("bid %s not settled: %s", bid_id, error)
        return outcome

    def loan_version(self, loan: Loan, version: int) -> RepaymentOutcome:
        """Distribute a loan version's payments and apply its status (see :meth:`LedgerService.settle_loan`)."""
        return self.service.settle_loan(loan, version)

    def due_drift(self) -> list[PortfolioDrifted]:
        """Portfolio changes whose window has passed, for the caller to publish to trading."""
        return self.service.due_drift()


def matching_subscriber(
    handlers: LedgerHandlers,
    codec: EventCodec,
    patterns: str | Sequence[str],
    *,
    group: str = "ledger",
    prefetch: int = 1,
) -> Callable[[Bus], Awaitable[None]]:
    """A subscriber for the composition root's list: on start, it subscribes ``handlers`` to ``patterns``
    (where matching publishes) as the durable group ``group``; the codec must know matching's events."""

    async def handle(message: Message) -> None:
        event = codec.from_message(message)
        if isinstance(event, OfferMatched | LoanFunded | BidsRolledBack):
            await asyncio.to_thread(handlers.handle, event)

    async def subscribe(bus: Bus) -> None:
        # One at a time, in the order matching published them: a funding after its match, not before.
        await bus.subscribe(patterns, handle, group=group, prefetch=prefetch)

    return subscribe
