"""Errors of the trading context.

::

    TrancheError
    ├── ValidationError
    │   └── InvalidPortfolioError      a portfolio breaks a rule; ``field`` names where (``buckets[1].weight``)
    ├── NotFoundError
    │   └── PortfolioNotFoundError     no portfolio with this id (for this investor)
    └── TradingError
        └── PortfolioClosedError       a closed portfolio was asked to change
"""

from __future__ import annotations

from tranche.shared.errors import NotFoundError, TrancheError, ValidationError


class TradingError(TrancheError):
    """Base of the errors of the trading context that are not plain validation or lookup failures."""

    code = "trading_error"


class InvalidPortfolioError(ValidationError):
    """A portfolio (or one of its buckets) breaks a rule: weights that do not sum to 100 %, an empty range,
    an unknown currency or country, a ticket larger than the per-loan cap. ``field`` names the place."""

    code = "invalid_portfolio"


class PortfolioNotFoundError(NotFoundError):
    """No portfolio has this id."""

    code = "portfolio_not_found"


class PortfolioClosedError(TradingError):
    """The portfolio is closed: it can be read but never changed or resumed."""

    code = "portfolio_closed"
