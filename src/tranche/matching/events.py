"""Events the matcher publishes, each under ``match.<lender>.<kind>``.

A match's bids are reserved by the ledger before they are confirmed (see :mod:`tranche.trading.market`):
``OfferMatched`` says bids were placed, ``LoanFunded`` that the listed bids are confirmed (the ledger posts their
reservations), ``BidsRolledBack`` that they never will be (the ledger voids any reservation they had), and
``OffersRefused`` that loan versions could not be offered at all, with the reason.

Amounts are integer minor units of ``currency``; rates are annual nominal ``Decimal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from tranche.shared.messages import Event


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
class OfferMatched(Event):
    """Bids were placed on a loan; they are confirmed once the ledger has reserved each investor's cash."""

    topic_template: ClassVar[str] = "match.{lender_id}.matched"

    match_id: str
    lender_id: str
    loan_id: str
    loan_version: int
    currency: str
    all_or_nothing: bool
    bids: tuple[Bid, ...]
    sell_offer_id: str = ""  # the matcher's offer of this loan version


@dataclass(frozen=True, slots=True)
class LoanFunded(Event):
    """The listed bids are confirmed: the ledger posts their reservations (cash to lender, holding to investor)."""

    topic_template: ClassVar[str] = "match.{lender_id}.funded"

    lender_id: str
    loan_id: str
    loan_version: int
    currency: str
    bid_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BidsRolledBack(Event):
    """The listed bids will never be confirmed (the investor could not pay, the loan changed or left the market,
    the portfolio was edited): the ledger voids whatever reservation they had."""

    topic_template: ClassVar[str] = "match.{lender_id}.rolled_back"

    lender_id: str
    loan_id: str
    reason: str
    bid_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RefusedOffer:
    """One loan version the market could not offer, with the field at fault and why."""

    loan_id: str
    loan_version: int
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class OffersRefused(Event):
    """Loan versions the market refused to offer (e.g. the lender's margin exceeds the loan's rate); each alone,
    its neighbours are offered."""

    topic_template: ClassVar[str] = "match.{lender_id}.refused"
    lender_id: str
    batch_id: str
    loans: tuple[RefusedOffer, ...]
