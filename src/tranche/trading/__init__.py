"""Trading: investors' portfolios, the gap analyzer that turns them into buy offers, and the market role that
drives the matcher's books with them (:class:`Market`), reserving investors' cash with the ledger before any bid is
confirmed."""

from tranche.trading.adapters import BusReservations, LedgerQueries, SqlPortfolioStore
from tranche.trading.cashbook import Cashbook
from tranche.trading.checks import Check, MarketState, evaluate, market_checks
from tranche.trading.domain import (
    Bucket,
    BucketComposition,
    BucketPosition,
    HeldPrincipal,
    Portfolio,
    PortfolioStatus,
)
from tranche.trading.errors import (
    InvalidPortfolioError,
    PortfolioClosedError,
    PortfolioNotFoundError,
    TradingError,
)
from tranche.trading.events import PortfolioChanged
from tranche.trading.handlers import HANDLERS
from tranche.trading.market import (
    INSUFFICIENT_CASH,
    LedgerUnavailableError,
    Market,
    ReservationAnswer,
    Reservations,
)
from tranche.trading.service import (
    BucketDraft,
    Clients,
    EveryoneMayBuy,
    InMemoryLedgerView,
    LedgerView,
    PortfolioDraft,
    PortfolioView,
    TradingService,
)
from tranche.trading.store import FillRow, InMemoryPortfolioStore, OfferRow, PortfolioStore

__all__ = [
    "HANDLERS",
    "INSUFFICIENT_CASH",
    "Bucket",
    "BucketComposition",
    "BucketDraft",
    "BucketPosition",
    "BusReservations",
    "Cashbook",
    "Check",
    "Clients",
    "EveryoneMayBuy",
    "FillRow",
    "HeldPrincipal",
    "InMemoryLedgerView",
    "InMemoryPortfolioStore",
    "InvalidPortfolioError",
    "LedgerQueries",
    "LedgerUnavailableError",
    "LedgerView",
    "Market",
    "MarketState",
    "OfferRow",
    "Portfolio",
    "PortfolioChanged",
    "PortfolioClosedError",
    "PortfolioDraft",
    "PortfolioNotFoundError",
    "PortfolioStatus",
    "PortfolioStore",
    "PortfolioView",
    "ReservationAnswer",
    "Reservations",
    "SqlPortfolioStore",
    "TradingError",
    "TradingService",
    "evaluate",
    "market_checks",
]
