"""A slice assessed from its stored columns (the diff's own assessment, and the assess stage's with the
built-in projection) is row for row what assessing the loans themselves gives."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from assessment_loans import loans, make_loan
from hypothesis import given, settings
from hypothesis import strategies as st

from tranche.assessment.domain import RiskRuleVersion
from tranche.assessment.projection import MAX_PRINCIPAL, project_many, project_totals
from tranche.assessment.rules import parse_risk_rules
from tranche.assessment.slices import (
    LoadedSlice,
    assess_projected,
    assess_versions,
    project_and_assess,
    version_loan,
)
from tranche.intake.parse import columns_of
from tranche.shared.loan import Borrower, Loan, LoanStatus

AT = datetime(2026, 11, 23, 18, 30, tzinfo=UTC)

RULES = RiskRuleVersion(
    "lender-1",
    3,
    parse_risk_rules(
        {
            "groups": ["A", "B", "C", "D"],
            "default": "D",
            "rules": [
                {"group": "C", "all": [{"field": "days_past_due", "op": ">", "value": 30}]},
                {
                    "group": "A",
                    "all": [
                        {"field": "income_to_payment", "op": ">=", "value": "3.5"},
                        {"field": "remaining_term", "op": "<=", "value": 48},
                    ],
                },
                {"group": "B", "all": [{"field": "next_payment_amount", "op": "<", "value": 20000}]},
                {"group": "B", "all": [{"field": "interest_rate", "op": "<", "value": "0.1"}]},
                {"group": "C", "all": [{"field": "country", "op": "in", "value": ["EE", "LV"]}]},
            ],
        }
    ),
    AT,
)


def as_stored(loan: Loan, version: int, dates_as_text: bool) -> tuple[Any, ...]:
    """A loan version as intake stores it: SQLite gives the dates back as text, PostgreSQL as dates."""
    row = (loan.loan_id, version, *columns_of(loan))
    if dates_as_text:
        return row
    issued, due = row[9], row[10]
    return (*row[:9], date.fromisoformat(issued), due and date.fromisoformat(due), *row[11:])


def assessed_from_loans(rows: list[tuple[Any, ...]], sqlite: bool) -> Any:
    pairs = [(version_loan("lender-1", row), int(row[1])) for row in rows]
    results = project_many([loan for loan, _ in pairs])
    return assess_projected(pairs, results, RULES, AT, sqlite, keep_schedule=False)


@st.composite
def borrowers(draw: st.DrawFn) -> Borrower:
    return Borrower(
        country=draw(st.sampled_from(["EE", "ES", "LV", "FI"])),
        age=draw(st.integers(18, 90)),
        income_monthly=draw(st.integers(0, 2_000_000)),
        credit_score=draw(st.integers(300, 850)),
    )


@st.composite
def any_loans(draw: st.DrawFn) -> Loan:
    """Projectable loans, with now and then one that is not (or owes nothing): each of them late or not."""
    loan = draw(loans())
    loan = replace(loan, borrower=draw(borrowers()), loan_id=f"L{draw(st.integers(0, 10**6))}")
    odd = draw(st.sampled_from(["usual"] * 6 + ["nothing owed", "too large", "rate", "no date"]))
    if odd == "nothing owed":
        loan = replace(loan, outstanding_principal=0)
    elif odd == "too large":
        loan = replace(loan, principal=MAX_PRINCIPAL + 1, outstanding_principal=MAX_PRINCIPAL + 1)
    elif odd == "rate":
        loan = replace(loan, interest_rate=Decimal("10.5"))
    elif odd == "no date":
        loan = replace(loan, next_payment_date=None)
    return loan


@settings(max_examples=80, deadline=None)
@given(st.lists(any_loans(), min_size=1, max_size=40), st.booleans())
def test_columns_give_the_same_assessments_as_loans(slice_: list[Loan], sqlite: bool) -> None:
    rows = [as_stored(loan, i % 3 + 1, dates_as_text=sqlite) for i, loan in enumerate(slice_)]
    from_columns = assess_versions("lender-1", rows, RULES, AT, sqlite)
    from_loans = assessed_from_loans(rows, sqlite)
    assert from_columns.rows == from_loans.rows
    assert from_columns.assessed == from_loans.assessed
    assert from_columns.refused == from_loans.refused


def test_the_built_in_assessment_of_a_stored_slice_takes_the_column_path_unless_rules_read_extras() -> None:
    rows = [as_stored(make_loan(f"L{i}", outstanding=100_000 * (i + 1)), 1, True) for i in range(5)]
    through_stage = project_and_assess(LoadedSlice(rows), "lender-1", RULES, AT, sqlite=True)
    assert through_stage == assess_versions("lender-1", rows, RULES, AT, sqlite=True)
    extras = replace(
        RULES,
        rules=parse_risk_rules(
            {"rules": [{"group": "A", "all": [{"field": "borrower.job", "op": "==", "value": "x"}]}]}
        ),
    )
    with pytest.raises(ValueError, match="extra attributes"):
        assess_versions("lender-1", rows, extras, AT, sqlite=True)
    # The stage still assesses them, from loans.
    assert len(project_and_assess(LoadedSlice(rows), "lender-1", extras, AT, sqlite=True).rows) == 5


def test_totals_are_what_the_whole_schedule_sums_to() -> None:
    slice_ = [
        make_loan("A", outstanding=1_234_567, rate="0.1999", term=360),
        make_loan("B", outstanding=999, rate="0", term=7),
        make_loan("C", outstanding=10**10, rate="0.35", term=1),
    ]
    projections = project_many(slice_)
    work = [
        (0, p.periods_count, i, loan.outstanding_principal, float(loan.interest_rate))
        for i, (loan, p) in enumerate(zip(slice_, projections, strict=True))
        if hasattr(p, "principal")
    ]
    totals = project_totals(work)
    for position, projection in enumerate(projections):
        found = totals[position]
        assert found is not None and not isinstance(projection, Exception)
        assert (found.periods, found.next_payment, found.total_interest) == (
            projection.periods_count,
            projection.next_payment,
            projection.total_interest,
        )


def test_a_version_row_makes_the_loan_it_was_stored_from() -> None:
    loan = replace(make_loan("L1", rate="0.0725"), status=LoanStatus.ACTIVE, all_or_nothing=True)
    assert version_loan("lender-1", as_stored(loan, 2, True)) == loan
    assert version_loan("lender-1", as_stored(loan, 2, False)) == loan
