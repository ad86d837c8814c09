"""The ledger: double-entry accounts and transfers, settlement of matches, repayments, and reports.

Every cent that moves is a balanced, immutable, idempotent transfer (:mod:`tranche.ledger.domain`, the pure
rule); :class:`SqlLedger` stores them in SQLite or PostgreSQL in batches, and the database checks on its own
that every currency sums to zero. :class:`LedgerService` runs the flows (cash in and out, reservations,
funding, repayments, write-offs), :class:`LedgerReports` the reports, :class:`LedgerHandlers` takes
matching's events. Errors are in :mod:`tranche.ledger.errors`.
"""

from tranche.ledger.adapters import SqlLedger
from tranche.ledger.domain import Account, AccountKind, Outcome, Phase, Transfer, TransferResult
from tranche.ledger.drift import DriftAggregator, PortfolioDrifted
from tranche.ledger.handlers import LedgerHandlers, matching_subscriber
from tranche.ledger.reports import LedgerReports
from tranche.ledger.service import LedgerService

__all__ = [
    "Account",
    "AccountKind",
    "DriftAggregator",
    "LedgerHandlers",
    "LedgerReports",
    "LedgerService",
    "Outcome",
    "Phase",
    "PortfolioDrifted",
    "SqlLedger",
    "Transfer",
    "TransferResult",
    "matching_subscriber",
]
