"""Intake: lenders' loan tapes in, loan versions stored append-only, and the events that say what changed."""

from collections.abc import Sequence

from sqlalchemy import Connection

from tranche.intake.events import (
    AssessedLoan,
    LoanKey,
    LoansAssessed,
    LoansChanged,
    LoansLeftActive,
    LoansListed,
    LoansRejected,
)
from tranche.shared.loan import Borrower, Loan, LoanStatus, Payment, ScheduleType

__all__ = [
    "AssessedLoan",
    "Borrower",
    "Loan",
    "LoanKey",
    "LoanStatus",
    "LoansAssessed",
    "LoansChanged",
    "LoansLeftActive",
    "LoansListed",
    "LoansRejected",
    "Payment",
    "ScheduleType",
    "load_documents",
    "load_versions",
]


def load_versions(
    conn: Connection, lender_id: str, keys: Sequence[tuple[str, int]]
) -> list[tuple[Loan, int]]:
    """The stored loan versions ``keys`` ((loan id, version) pairs) of one lender, read from their columns."""
    from tranche.intake.assessing import load_versions as load  # assessment is loaded only when asked

    return load(conn, lender_id, keys)


def load_documents(
    conn: Connection, lender_id: str, keys: Sequence[tuple[str, int]]
) -> list[tuple[Loan, int]]:
    """The stored loan versions ``keys`` of one lender with every field of their documents (payments too)."""
    from tranche.intake.assessing import load_documents as load

    return load(conn, lender_id, keys)
