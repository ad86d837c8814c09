"""Events intake publishes when it records loan versions.

One event carries every loan of one kind from one slice of a tape (about a thousand), because a tape carries
up to millions of loans and a message per loan would make the bus the bottleneck. Routing keys:
``loan.<lender>.listed``, ``loan.<lender>.changed``, ``loan.<lender>.withdrawn`` (and ``.repaid``,
``.defaulted``, ``.written_off``), ``loan.<lender>.rejected`` for documents that failed validation, and
``loan.<lender>.assessed`` once the assess stage has put the listed and changed loans in a risk group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tranche.shared.loan import LEFT_ACTIVE
from tranche.shared.messages import Event


@dataclass(frozen=True, slots=True)
class LoanKey:
    loan_id: str
    version: int


@dataclass(frozen=True, slots=True)
class LoansListed(Event):
    """Loans seen for the first time (version 1)."""

    topic_template: ClassVar[str] = "loan.{lender_id}.listed"
    lender_id: str
    batch_id: str
    loans: tuple[LoanKey, ...]


@dataclass(frozen=True, slots=True)
class LoansChanged(Event):
    """Loans whose content changed: a new version was stored."""

    topic_template: ClassVar[str] = "loan.{lender_id}.changed"
    lender_id: str
    batch_id: str
    loans: tuple[LoanKey, ...]


@dataclass(frozen=True, slots=True)
class LoansLeftActive(Event):
    """Loans whose status left ``active``: withdrawn, repaid, defaulted or written off (``status``)."""

    topic_template: ClassVar[str] = "loan.{lender_id}.{status}"

    @classmethod
    def topic_patterns(cls) -> tuple[str, ...]:
        return tuple(f"loan.*.{status}" for status in LEFT_ACTIVE)

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
class LoansAssessed(Event):
    """Loan versions that were assessed and may now be offered (``loan.<lender>.assessed``)."""

    topic_template: ClassVar[str] = "loan.{lender_id}.assessed"
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
class LoansRejected(Event):
    """Documents of a tape that were refused, with the field and the reason."""

    topic_template: ClassVar[str] = "loan.{lender_id}.rejected"
    lender_id: str
    batch_id: str
    rejections: tuple[RejectedLoan, ...]
