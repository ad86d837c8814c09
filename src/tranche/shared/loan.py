"""The loan as the platform knows it: one validated version of a lender's loan document.

Every context speaks of loans (assessment projects their cash flow, matching offers them, the ledger settles
their repayments), but only intake builds them, from a lender's tape. The model is shared kernel, below the
contexts, so that none of them imports another to name a loan: intake depends on assessment, never the
other way round.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any


class LoanStatus(enum.StrEnum):
    ACTIVE = "active"
    REPAID = "repaid"
    DEFAULTED = "defaulted"
    WRITTEN_OFF = "written_off"
    WITHDRAWN = "withdrawn"


LEFT_ACTIVE: tuple[LoanStatus, ...] = (
    LoanStatus.WITHDRAWN,
    LoanStatus.REPAID,
    LoanStatus.DEFAULTED,
    LoanStatus.WRITTEN_OFF,
)
"""The statuses a loan leaves ``active`` for: each takes it off the market for good."""


class ScheduleType(enum.StrEnum):
    ANNUITY = "annuity"
    LINEAR = "linear"
    BULLET = "bullet"


@dataclass(frozen=True, slots=True)
class Borrower:
    """The borrower's attributes that criteria and risk rules look at; unknown ones are kept in ``extra``."""

    country: str  # ISO 3166-1 alpha-2
    age: int
    income_monthly: int  # minor units of the loan's currency
    credit_score: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Payment:
    """A payment the lender received from the borrower since its previous tape."""

    date: date
    principal: int  # minor units
    interest: int  # minor units


@dataclass(frozen=True, slots=True)
class Loan:
    """One version of a loan. Amounts are integer minor units of ``currency``; the rate is annual nominal."""

    lender_id: str
    loan_id: str
    status: LoanStatus
    currency: str
    principal: int
    outstanding_principal: int
    interest_rate: Decimal
    term_months: int
    schedule_type: ScheduleType
    issue_date: date
    borrower: Borrower
    next_payment_date: date | None = None
    all_or_nothing: bool = False
    payments: tuple[Payment, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
