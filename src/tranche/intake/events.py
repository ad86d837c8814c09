"""Events intake publishes when it records loan versions.

One event carries every loan of one kind from one slice of a tape (about a thousand), because a tape carries
up to millions of loans and a message per loan would make the bus the bottleneck. Routing keys:
``loan.<lender>.listed``, ``loan.<lender>.changed``, ``loan.<lender>.withdrawn`` (and ``.repaid``,
``.defaulted``, ``.written_off``), ``loan.<lender>.rejected`` for documents that failed validation, and
``loan.<lender>.assessed`` once the assess stage has put the listed and changed loans in a risk group.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoanKey:
    loan_id: str
    version: int


@dataclass(frozen=True, slots=True)
class LoansListed:
    """Loans seen for the first time (version 1)."""

    lender_id: str
    batch_id: str
    loans: tuple[LoanKey, ...]


@dataclass(frozen=True, slots=True)
class LoansChanged:
    """Loans whose content changed: a new version was stored."""

    lender_id: str
    batch_id: str
    loans: tuple[LoanKey, ...]


@dataclass(frozen=True, slots=True)
class LoansLeftActive:
    """Loans whose status left ``active``: withdrawn, repaid, defaulted or written off (``status``)."""

    lender_id: str
    batch_id: str
    status: str
    loans: tuple[LoanKey, ...]


@dataclass(frozen=True, slots=True)
class AssessedLoan:
    loan_id: str
    version: int
    risk_group: str


@dataclass(frozen=True, slots=True)
class LoansAssessed:
    """Loan versions that were assessed and may now be offered (``loan.<lender>.assessed``)."""

    lender_id: str
    batch_id: str
    loans: tuple[AssessedLoan, ...]


@dataclass(frozen=True, slots=True)
class RejectedLoan:
    document: int
    loan_id: str | None
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class LoansRejected:
    """Documents of a tape that were refused, with the field and the reason."""

    lender_id: str
    batch_id: str
    rejections: tuple[RejectedLoan, ...]
