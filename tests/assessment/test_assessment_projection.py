"""Cash-flow projection: compared with numpy-financial and with exact rational arithmetic."""

from __future__ import annotations

import calendar
import warnings
from datetime import date
from decimal import Decimal
from fractions import Fraction

import numpy as np
import numpy_financial as npf
import pytest
from assessment_loans import loans, make_loan
from hypothesis import given, settings
from hypothesis import strategies as st

from tranche.assessment.errors import LoanError
from tranche.assessment.projection import (
    MAX_PRINCIPAL,
    Projection,
    add_months,
    project,
    project_many,
    remaining_term,
)
from tranche.shared.loan import Loan, ScheduleType

TOLERANCE = 1 + 1e-6  # one minor unit, plus float noise of the reference


def reference(loan: Loan) -> tuple[np.ndarray, np.ndarray]:
    """numpy-financial's principal and interest per period (positive floats)."""
    n = remaining_term(loan)
    rate = float(loan.interest_rate) / 12
    periods = np.arange(1, n + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # npf divides by a zero rate before masking it
        principal = -npf.ppmt(rate, periods, n, loan.outstanding_principal)
        interest = -npf.ipmt(rate, periods, n, loan.outstanding_principal)
    return np.asarray(principal, dtype=float), np.asarray(interest, dtype=float)


def exact(loan: Loan) -> tuple[list[Fraction], list[Fraction]]:
    """The exact schedule in rational numbers, for every schedule type."""
    n = remaining_term(loan)
    amount = Fraction(loan.outstanding_principal)
    rate = Fraction(loan.interest_rate) / 12
    q = 1 + rate
    powers = [q**k for k in range(n + 1)]
    repaid: list[Fraction] = []
    for k in range(1, n + 1):
        if loan.schedule_type is ScheduleType.LINEAR or (
            loan.schedule_type is ScheduleType.ANNUITY and rate == 0
        ):
            repaid.append(amount * k / n)
        elif loan.schedule_type is ScheduleType.ANNUITY:
            repaid.append(amount * (powers[k] - 1) / (powers[n] - 1))
        else:
            repaid.append(amount if k == n else Fraction(0))
    principal = [b - a for a, b in zip([Fraction(0), *repaid], repaid, strict=False)]
    interest = [rate * (amount - before) for before in [Fraction(0), *repaid[:-1]]]
    return principal, interest


def assert_close_to_numpy_financial(loan: Loan, projection: Projection) -> None:
    principal, interest = reference(loan)
    assert projection.periods_count == len(principal)
    assert np.all(np.abs(np.array(projection.principal) - principal) <= TOLERANCE)
    assert np.all(np.abs(np.array(projection.interest) - interest) <= TOLERANCE)
    assert projection.total_principal == loan.outstanding_principal
    # The reference's own float sum drifts (a few 1e-11 relative over 360 periods); the exact total is
    # checked against rational arithmetic below.
    assert abs(projection.total_interest - interest.sum()) <= 0.5 + 1e-6 + 1e-10 * interest.sum()


@settings(max_examples=60, deadline=None)
@given(st.lists(loans(ScheduleType.ANNUITY), min_size=1, max_size=60))
def test_annuity_periods_are_within_one_minor_unit_of_numpy_financial(slice_: list[Loan]) -> None:
    for loan, projection in zip(slice_, project_many(slice_), strict=True):
        assert isinstance(projection, Projection)
        assert_close_to_numpy_financial(loan, projection)


def test_two_thousand_random_annuities_in_one_slice_match_numpy_financial() -> None:
    draw = np.random.default_rng(20260101)
    slice_ = [
        make_loan(
            f"L{i}",
            outstanding=int(draw.integers(1, 10**10)),
            rate=Decimal(int(draw.integers(0, 6000))) / 10_000,
            term=term,
            issued=date(2025, 1, 10),
            next_payment=add_months(date(2025, 1, 10), int(draw.integers(1, term + 1))),
        )
        for i, term in enumerate(draw.integers(1, 361, size=2000).tolist())
    ]
    for loan, projection in zip(slice_, project_many(slice_), strict=True):
        assert isinstance(projection, Projection)
        assert_close_to_numpy_financial(loan, projection)


def assert_close_to_exact(loan: Loan, projection: Projection, tolerance: Fraction = Fraction(1)) -> None:
    principal, interest = exact(loan)
    assert all(
        abs(got - want) <= tolerance for got, want in zip(projection.principal, principal, strict=True)
    )
    assert all(abs(got - want) <= tolerance for got, want in zip(projection.interest, interest, strict=True))
    assert projection.total_principal == loan.outstanding_principal
    assert abs(projection.total_interest - sum(interest)) <= tolerance / 2


@settings(max_examples=60, deadline=None)
@given(st.lists(loans(max_term=120), min_size=1, max_size=30))
def test_every_schedule_type_is_within_one_minor_unit_of_the_exact_schedule(slice_: list[Loan]) -> None:
    for loan, projection in zip(slice_, project_many(slice_), strict=True):
        assert isinstance(projection, Projection)
        assert_close_to_exact(loan, projection)


@settings(max_examples=40, deadline=None)
@given(st.lists(loans(), min_size=1, max_size=30))
def test_a_loan_projects_the_same_alone_and_inside_any_slice(slice_: list[Loan]) -> None:
    together = project_many(slice_)
    assert together == [project(loan) for loan in slice_]


def test_a_linear_loan_repays_equal_principal_and_the_last_period_takes_the_remainder() -> None:
    projection = project(make_loan(outstanding=1000, rate="0.12", term=3, schedule=ScheduleType.LINEAR))
    assert projection.principal == (333, 334, 333)  # cumulative 333.33, 666.67, 1000 rounded
    assert projection.interest == (10, 7, 3)  # 1% of 1000, 666.67, 333.33
    assert projection.next_payment == 343


def test_a_bullet_loan_pays_interest_only_until_the_principal_at_maturity() -> None:
    projection = project(make_loan(outstanding=100_000, rate="0.06", term=4, schedule=ScheduleType.BULLET))
    assert projection.principal == (0, 0, 0, 100_000)
    assert projection.interest == (500, 500, 500, 500)


def test_a_zero_rate_annuity_splits_the_principal_evenly_without_interest() -> None:
    projection = project(make_loan(outstanding=100, rate="0", term=3))
    assert projection.principal == (33, 34, 33)
    assert projection.total_interest == 0


def test_the_remaining_term_counts_calendar_months_from_the_next_payment_to_maturity() -> None:
    issued = date(2025, 1, 31)
    assert remaining_term(make_loan(term=12, issued=issued, next_payment=date(2025, 2, 28))) == 12
    assert remaining_term(make_loan(term=12, issued=issued, next_payment=date(2025, 6, 30))) == 8
    assert remaining_term(make_loan(term=12, issued=issued, next_payment=date(2026, 1, 31))) == 1
    # Due in the issue month: counted as the first payment; past maturity: one payment of everything.
    assert remaining_term(make_loan(term=12, issued=issued, next_payment=date(2025, 1, 31))) == 12
    assert remaining_term(make_loan(term=12, issued=issued, next_payment=date(2026, 9, 1))) == 1


def test_payment_dates_keep_the_day_of_the_next_payment_clamped_to_short_months() -> None:
    projection = project(make_loan(term=4, issued=date(2025, 12, 31), next_payment=date(2026, 1, 31)))
    assert projection.dates() == [date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30)]
    assert projection.maturity_date == date(2026, 4, 30)
    periods = list(projection.periods())
    assert [p.number for p in periods] == [1, 2, 3, 4]
    assert sum(p.payment for p in periods) == projection.total_principal + projection.total_interest


def test_add_months_crosses_years_and_leap_days() -> None:
    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert add_months(date(2024, 11, 15), 14) == date(2026, 1, 15)


def test_a_loan_with_nothing_outstanding_has_an_empty_schedule() -> None:
    projection = project(make_loan(outstanding=0))
    assert projection.periods_count == 0
    assert projection.next_payment == 0
    assert projection.maturity_date == date(2026, 2, 15)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"rate": "-0.01"}, "interest_rate"),
        ({"rate": "NaN"}, "interest_rate"),
        ({"rate": "11"}, "interest_rate"),
        ({"outstanding": -5}, "outstanding_principal"),
        ({"outstanding": MAX_PRINCIPAL + 1}, "outstanding_principal"),
        ({"term": 0}, "term_months"),
        ({"next_payment": None}, "next_payment_date"),
        ({"rate": "10", "term": 1200}, "interest_rate"),  # the powers of the monthly factor overflow
    ],
)
def test_an_unprojectable_loan_is_an_error_naming_the_field_and_its_neighbours_go_on(
    changes: dict[str, object], field: str
) -> None:
    bad = make_loan("BAD", **changes)  # type: ignore[arg-type]
    results = project_many([make_loan("A"), bad, make_loan("B")])
    assert isinstance(results[0], Projection) and results[0].loan_id == "A"
    assert isinstance(results[2], Projection) and results[2].loan_id == "B"
    error = results[1]
    assert isinstance(error, LoanError)
    assert (error.lender_id, error.loan_id, error.field) == ("lender-1", "BAD", field)
    with pytest.raises(LoanError):
        project(bad)


@pytest.mark.parametrize(("rate", "term"), [("0.3599", 360), ("0.0001", 1200), ("9.9", 100)])
def test_the_largest_accepted_principal_stays_within_one_minor_unit_of_the_exact_schedule(
    rate: str, term: int
) -> None:
    loan = make_loan(outstanding=MAX_PRINCIPAL, rate=rate, term=term)
    assert_close_to_exact(loan, project(loan), tolerance=Fraction(101, 100))


def test_a_slice_mixing_long_and_short_terms_keeps_every_loan_in_its_place() -> None:
    slice_ = [
        make_loan(f"L{i}", term=term, schedule=schedule, rate=Decimal(i) / 1000)
        for i, (term, schedule) in enumerate(
            (t, s) for t in (1, 7, 36, 120, 360, 600) for s in ScheduleType for _ in range(30)
        )
    ]
    results = project_many(slice_)
    assert [r.loan_id for r in results] == [loan.loan_id for loan in slice_]
    for loan, result in zip(slice_, results, strict=True):
        assert isinstance(result, Projection)
        assert result.periods_count == loan.term_months
        assert result.total_principal == loan.outstanding_principal


@given(st.dates(date(1900, 1, 1), date(2200, 12, 31)), st.integers(0, 2400), st.integers(1, 31))
def test_add_months_lands_on_the_day_or_the_months_last_day(start: date, months: int, day: int) -> None:
    moved = add_months(start, months, day)
    assert (moved.year - start.year) * 12 + moved.month - start.month == months
    assert moved.day == min(day, calendar.monthrange(moved.year, moved.month)[1])
