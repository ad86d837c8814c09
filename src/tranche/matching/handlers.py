"""Keeping the books in step with intake and assessment: an assessed loan version is offered (replacing the
loan's previous offer), and a loan that leaves ``active`` is taken off the market at once."""

from __future__ import annotations

from collections.abc import Iterable

from tranche.matching.book import Event
from tranche.matching.offers import MarginSchedule, RetainedShares, sell_offer_for
from tranche.matching.service import MatchingService
from tranche.shared.loan import Loan


class LoanOffers:
    """Handlers for loan events, on a :class:`MatchingService`."""

    def __init__(
        self, matching: MatchingService, margins: MarginSchedule, retained: RetainedShares, lot: int = 100
    ) -> None:
        self.matching = matching
        self.margins = margins
        self.retained = retained
        self.lot = lot

    def assessed(self, loan: Loan, loan_version: int, risk_group: str, already_sold: int = 0) -> list[Event]:
        """A loan version was assessed: offer it, replacing (and rolling back) the loan's previous offer.

        ``already_sold`` is what investors already hold of the loan (confirmed bids of earlier versions).
        """
        offer = sell_offer_for(
            loan, loan_version, risk_group, self.margins, self.retained, self.lot, already_sold
        )
        previous = self.matching.matcher.live_offer_of(loan.lender_id, loan.loan_id)
        if previous is None and offer is None:
            return []
        return self.matching.replace_loan(previous, offer, "loan changed")

    def left_active(self, lender_id: str, loan_ids: Iterable[str], status: str) -> list[Event]:
        """Loans were withdrawn, repaid, defaulted or written off: never sell them again."""
        events: list[Event] = []
        for loan_id in loan_ids:
            previous = self.matching.matcher.live_offer_of(lender_id, loan_id)
            if previous is not None:
                events += self.matching.replace_loan(previous, None, status)
        return events
