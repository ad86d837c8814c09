"""Matching: the order books of loan fractions (sell offers) against investors' buckets (buy offers).

The books (:class:`Matcher`) are pure and in memory; :class:`MatchingService` keeps them with their durable
record (:class:`MatchingRecord`: :class:`SqlMatchingRecord` on the store, :class:`InMemoryMatchingRecord`), from
which they are rebuilt after a restart. :func:`sell_offer_for` turns an assessed loan version into the part of
it that is for sale. The market role (:mod:`tranche.trading`) drives the books; its events are published under
``match.<lender>.matched|funded|rolled_back|refused``.
"""

from tranche.matching.adapters import SqlMatchingRecord, confirmed_amounts, record_refusals
from tranche.matching.book import Matcher, offer_of_bid
from tranche.matching.criteria import Criteria, LoanTraits
from tranche.matching.errors import (
    DuplicateOfferError,
    InvalidOfferError,
    MatchingError,
    OfferWithdrawnError,
    UnknownOfferError,
)
from tranche.matching.events import (
    Bid,
    BidsRolledBack,
    LoanFunded,
    OfferMatched,
    OffersRefused,
    RefusedOffer,
)
from tranche.matching.offers import MarginSchedule, RetainedShares, offer_id_for, sell_offer_for
from tranche.matching.queries import (
    LoanOnMarket,
    MarketFigures,
    OfferOfLoan,
    OfferSales,
    RefusalOfLoan,
    SaleOfLoan,
    loan_on_market,
    market_figures,
    offer_sales,
)
from tranche.matching.record import InMemoryMatchingRecord, MatchingRecord, OfferStatus
from tranche.matching.service import MatchingService
from tranche.matching.values import BidRecord, BuyOffer, Changes, DurableState, MatchEvent, SellOffer

__all__ = [
    "Bid",
    "BidRecord",
    "BidsRolledBack",
    "BuyOffer",
    "Changes",
    "Criteria",
    "DuplicateOfferError",
    "DurableState",
    "InMemoryMatchingRecord",
    "InvalidOfferError",
    "LoanFunded",
    "LoanOnMarket",
    "LoanTraits",
    "MarginSchedule",
    "MarketFigures",
    "MatchEvent",
    "Matcher",
    "MatchingError",
    "MatchingRecord",
    "MatchingService",
    "OfferMatched",
    "OfferOfLoan",
    "OfferSales",
    "OfferStatus",
    "OfferWithdrawnError",
    "OffersRefused",
    "RefusalOfLoan",
    "RefusedOffer",
    "RetainedShares",
    "SaleOfLoan",
    "SellOffer",
    "SqlMatchingRecord",
    "UnknownOfferError",
    "confirmed_amounts",
    "loan_on_market",
    "market_figures",
    "offer_id_for",
    "offer_of_bid",
    "offer_sales",
    "record_refusals",
    "sell_offer_for",
]
