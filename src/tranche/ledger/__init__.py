"""The ledger: double-entry accounts and transfers, reservations for the market, settlement of fundings,
repayments and loan outcomes, and the reports read from them.

Every cent that moves is a balanced, immutable, idempotent transfer (:mod:`tranche.ledger.domain` and the pure
rule of :mod:`tranche.ledger.planning`), stored behind the :class:`LedgerStore` port: :class:`SqlLedgerStore`
in SQLite or PostgreSQL (the database checks on its own that every currency sums to zero) and
:class:`InMemoryLedgerStore`. What the rest of tranche uses:

**The market reserves before it confirms.** It sends a cycle's matches as one :class:`ReserveBids` to the ledger
role over the bus (:func:`request_reservations`; the role answers with :func:`serve_reservations`) and confirms
only the bids the :class:`BidsReserved` answer lists as ``reserved``; each :class:`Refusal` says why
(``insufficient_cash``, ``all_or_nothing``, ``bid_closed``, ...) and ``cash`` gives every named investor's
available cash after the request. In one process, :meth:`LedgerService.reserve` does the same. Funding
(``LoanFunded``) posts the reservations and a roll-back (``BidsRolledBack``) voids them::

    answer = await request_reservations(bus, codec, ReserveBids("cycle-7", matches), timeout=10)
    confirm = set(answer.reserved)           # fund these (LoanFunded), roll back the rest of the fills
    for refusal in answer.refused: ...       # refusal.code == "insufficient_cash": hold the portfolio

**Events** it publishes through the outbox: :class:`CashAvailable` (``investor.<id>.cash``) when an investor's
available cash moves outside a reservation (deposit, withdrawal, repayment, voided or expired reservation), and
:class:`PortfolioDrifted` (``portfolio.<id>.drifted``) when settlement changed what a portfolio holds.

**Query ports** (:class:`LedgerReports`): :meth:`~LedgerReports.available_cash` of an investor per currency,
:meth:`~LedgerReports.available_cash_of` many investors in one currency, and
:meth:`~LedgerReports.portfolio_holdings` of a set of portfolios (bid, loan, invested, principal still held,
written off, status, investor rate), each one indexed query; and the investors' and lenders' reports.

**The ledger role**: :data:`HANDLERS` (plain functions; bind ``ledger`` and ``engine``), :func:`on_timer` every
:data:`TIMER_SECONDS`, and the two services above. Errors are in :mod:`tranche.ledger.errors`.
"""

from tranche.ledger.adapters import SqlLedgerStore
from tranche.ledger.domain import MAX_AMOUNT, Account, AccountKind, Outcome, Phase, Transfer, TransferResult
from tranche.ledger.errors import (
    AmountOverflowError,
    IdempotencyKeyReusedError,
    InsufficientCashError,
    LedgerError,
    OverdraftError,
    UnbalancedLedgerError,
)
from tranche.ledger.handlers import (
    HANDLERS,
    TIMER_SECONDS,
    on_timer,
    request_reservations,
    request_statement,
    serve_reservations,
    serve_statements,
)
from tranche.ledger.messages import (
    BidsReserved,
    CashAvailable,
    CashPosition,
    Movement,
    PortfolioDrifted,
    ReadStatement,
    Refusal,
    ReserveBids,
    StatementPart,
)
from tranche.ledger.repayment import LoanVersion, Payment
from tranche.ledger.reports import (
    Holding,
    LedgerReports,
    MarketPositions,
    PortfolioHolding,
    SettlementDay,
    Statement,
)
from tranche.ledger.service import BidsOutcome, CashMovement, LedgerService, RepaymentOutcome
from tranche.ledger.store import Activity, HoldingStatus, InMemoryLedgerStore, LedgerStore

__all__ = [
    "HANDLERS",
    "MAX_AMOUNT",
    "TIMER_SECONDS",
    "Account",
    "AccountKind",
    "Activity",
    "AmountOverflowError",
    "BidsOutcome",
    "BidsReserved",
    "CashAvailable",
    "CashMovement",
    "CashPosition",
    "Holding",
    "HoldingStatus",
    "IdempotencyKeyReusedError",
    "InMemoryLedgerStore",
    "InsufficientCashError",
    "LedgerError",
    "LedgerReports",
    "LedgerService",
    "LedgerStore",
    "LoanVersion",
    "MarketPositions",
    "Movement",
    "Outcome",
    "OverdraftError",
    "Payment",
    "Phase",
    "PortfolioDrifted",
    "PortfolioHolding",
    "ReadStatement",
    "Refusal",
    "RepaymentOutcome",
    "ReserveBids",
    "SettlementDay",
    "SqlLedgerStore",
    "Statement",
    "StatementPart",
    "Transfer",
    "TransferResult",
    "UnbalancedLedgerError",
    "on_timer",
    "request_reservations",
    "request_statement",
    "serve_reservations",
    "serve_statements",
]
