"""Errors of the matching context.

::

    TrancheError
    └── MatchingError
        ├── UnknownOfferError          an offer id the matcher does not hold
        ├── DuplicateOfferError        an offer id added twice
        ├── OfferWithdrawnError        a withdrawn (or repaid) loan's offer was asked to sell or confirm
        └── InvalidOfferError          an offer whose own fields break a rule (negative amount, zero ticket)
"""

from __future__ import annotations

from tranche.shared.errors import TrancheError


class MatchingError(TrancheError):
    """Base of the errors the matcher raises."""

    code = "matching_error"


class UnknownOfferError(MatchingError):
    """The offer id names no offer the matcher holds."""

    code = "unknown_offer"


class DuplicateOfferError(MatchingError):
    """An offer with this id was already added; offers are immutable, a change is a new offer."""

    code = "duplicate_offer"


class OfferWithdrawnError(MatchingError):
    """The offer was withdrawn (the loan changed, was withdrawn or repaid): it can never be sold again."""

    code = "offer_withdrawn"


class InvalidOfferError(MatchingError):
    """An offer's own fields break a rule: a negative amount, a ticket of zero, a cap below the ticket."""

    code = "invalid_offer"
