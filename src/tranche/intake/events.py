"""Events intake publishes when it records loan versions.

One event carries every loan of one kind from one slice of a tape (about a thousand), because a tape carries
up to millions of loans and a message per loan would make the bus the bottleneck. Routing keys:
``loan.<lender>.listed``, ``loan.<lender>.changed``, ``loan.<lender>.withdrawn`` (and ``.repaid``,
``.defaulted``, ``.written_off``), and ``loan.<lender>.rejected`` for documents that failed validation.
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
