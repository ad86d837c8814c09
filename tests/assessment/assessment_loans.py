"""Loans and hypothesis strategies shared by the assessment tests."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from tranche.assessment.projection import add_months
from tranche.shared.loan import Borrower, Loan, LoanStatus, ScheduleType

BORROWER = Borrower(country="EE", age=35, income_monthly=250_000, credit_score=720)


def make_loan(
    loan_id: str = "L1",
    *,
    lender_id: str = "lender-1",
    outstanding: int = 1_000_000,
    rate: str | Decimal = "0.12",
    term: int = 36,
    schedule: ScheduleType = ScheduleType.ANNUITY,
    issued: date = date(2026, 1, 15),
    next_payment: date | None = date(2026, 2, 15),
    borrower: Borrower = BORROWER,
    currency: str = "EUR",
    extra: dict[str, Any] | None = None,
) -> Loan:
    return Loan(
        lender_id=lender_id,
        loan_id=loan_id,
        status=LoanStatus.ACTIVE,
        currency=currency,
        principal=max(outstanding, 1),
        outstanding_principal=outstanding,
        interest_rate=Decimal(rate),
        term_months=term,
        schedule_type=schedule,
        issue_date=issued,
        borrower=borrower,
        next_payment_date=next_payment,
        extra=extra or {},
    )


@st.composite
def loans(draw: st.DrawFn, schedule: ScheduleType | None = None, max_term: int = 360) -> Loan:
    """A projectable loan: any schedule type, rate 0-60% in basis points, a payment somewhere in its term."""
    term = draw(st.integers(1, max_term))
    issued = draw(st.dates(date(2000, 1, 1), date(2040, 12, 31)))
    paid = draw(st.integers(0, term - 1))  # payments already made
    return make_loan(
        f"L{draw(st.integers(0, 10**9))}",
        outstanding=draw(st.integers(1, 10**10)),
        rate=Decimal(draw(st.integers(0, 6000))) / 10_000,
        term=term,
        schedule=schedule or draw(st.sampled_from(list(ScheduleType))),
        issued=issued,
        next_payment=add_months(issued, paid + 1),
    )
