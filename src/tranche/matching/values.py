"""The matcher's values: offers, the durable record of bids, and what a step of the matcher changed.

Amounts are integer minor units of the offer's currency; rates are annual nominal ``Decimal``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from tranche.matching.criteria import Criteria, LoanTraits
from tranche.matching.events import Bid, BidsRolledBack, LoanFunded, OfferMatched

MatchEvent = OfferMatched | LoanFunded | BidsRolledBack
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
