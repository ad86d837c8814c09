"""Events the matcher publishes; the ledger settles them.

Amounts are integer minor units of ``currency``; rates are annual nominal ``Decimal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Bid:
    """One investor's fraction of one loan at agreed prices; the margin is lender_rate - investor_rate."""

    bid_id: str
    buy_offer_id: str
    portfolio_id: str
    investor_id: str
    amount: int
    investor_rate: Decimal
    lender_rate: Decimal
    margin: Decimal


@dataclass(frozen=True, slots=True)
class OfferMatched:
    """Bids were placed on a loan: the ledger reserves each investor's cash (pending transfers)."""

    match_id: str
    lender_id: str
    loan_id: str
    loan_version: int
    currency: str
    all_or_nothing: bool
    bids: tuple[Bid, ...]
    sell_offer_id: str = ""  # the matcher's offer of this loan version


@dataclass(frozen=True, slots=True)
class LoanFunded:
    """The listed bids are confirmed: the ledger posts their reservations (cash to lender, holding to investor)."""

    lender_id: str
    loan_id: str
    loan_version: int
    currency: str
    bid_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BidsRolledBack:
    """The listed bids will never be confirmed (loan changed, withdrawn, not fully subscribed, offer edited):
    the ledger voids their reservations."""

    lender_id: str
    loan_id: str
    reason: str
    bid_ids: tuple[str, ...]
