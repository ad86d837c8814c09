"""A slice of loan versions from the rows the store gave to the rows to append: pure, and made of plain,
picklable values, so that the CPU-heavy part (making loans, projecting them, grouping them by the rules) may
run in a :class:`~tranche.shared.compute.Compute` pool's process while the stage's own process writes.

This module imports neither SQLAlchemy nor the web stack: a pool's worker that imports it stays small.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from tranche.assessment.domain import Assessment, RiskRuleVersion, assess_slice
from tranche.assessment.errors import LoanError
from tranche.assessment.projection import (
    NOTHING_OWED,
    Projection,
    Work,
    add_months,
    out_of_range,
    periods_left,
    project_many,
    project_totals,
    projectable,
    schedule_kind,
    why_not,
)
from tranche.assessment.rules import LoanFacts
from tranche.shared.loan import Borrower, Loan, LoanStatus, ScheduleType

__all__ = [
    "COLUMNS",
    "VERSION_COLUMNS",
    "AssessedRows",
    "LoadedSlice",
    "assess_projected",
    "assess_versions",
    "assessment_row",
    "project_and_assess",
    "version_loan",
]

COLUMNS = (
    "lender_id",
    "loan_id",
    "loan_version",
    "rule_version",
    "risk_group",
    "currency",
    "schedule_type",
    "periods",
    "total_principal",
    "total_interest",
    "next_payment_amount",
    "next_payment_date",
    "maturity_date",
    "schedule",
    "assessed_at",
)
"""The columns of ``loan_assessments`` that :func:`assessment_row` fills, in its order."""

VERSION_COLUMNS = (
    "loan_id",
    "version",
    "status",
    "currency",
    "principal",
    "outstanding_principal",
    "interest_rate",
    "term_months",
    "schedule_type",
    "issue_date",
    "next_payment_date",
    "all_or_nothing",
    "borrower_country",
    "borrower_age",
    "borrower_income_monthly",
    "borrower_credit_score",
)
"""A loan version as :func:`assess_versions` reads it, in its order: the rate as text, the dates as
:class:`~datetime.date` or ISO text. All the built-in projection and rules without extra attributes need."""


@dataclass(frozen=True, slots=True)
class LoadedSlice:
    """Loan versions as the store gave them (plain tuples): :data:`VERSION_COLUMNS` rows, or rows that the
    module-level function ``build`` makes ``(loan, version)`` pairs. Both pickle, so the loans may be
    assessed in another process."""

    rows: list[tuple[Any, ...]]
    build: Callable[[str, list[tuple[Any, ...]]], list[tuple[Loan, int]]] | None = None

    def loans(self, lender_id: str) -> list[tuple[Loan, int]]:
        if self.build is None:
            return [(version_loan(lender_id, row), int(row[1])) for row in self.rows]
        return self.build(lender_id, self.rows)


@dataclass(frozen=True, slots=True)
class AssessedRows:
    """A slice assessed: the ``loan_assessments`` rows to append (:data:`COLUMNS`), and the loans that cannot
    be assessed as ``(loan_id, field, message)``."""

    rows: list[tuple[Any, ...]]
    refused: list[tuple[str, str | None, str]]

    @property
    def assessed(self) -> list[list[Any]]:
        """Each assessed loan as ``[loan_id, version, risk_group]``."""
        return [[row[1], row[2], row[4]] for row in self.rows]

    def errors(self, lender_id: str) -> list[LoanError]:
        return [
            LoanError(message, lender_id=lender_id, loan_id=loan, field=field)
            for loan, field, message in self.refused
        ]


def _sqlite_date(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _sqlite_datetime(value: datetime) -> str:
    # SQLAlchemy's own SQLite storage format, so that Core reads the rows back as it wrote them.
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def assessment_row(assessment: Assessment, sqlite: bool, at_text: str | None = None) -> tuple[Any, ...]:
    """An assessment as a row of :data:`COLUMNS`, with dates as text for SQLite (``at_text``: its
    ``assessed_at`` already so written, shared by a slice)."""
    schedule = (
        json.dumps(
            {"principal": assessment.principal, "interest": assessment.interest}, separators=(",", ":")
        )
        if assessment.has_schedule and assessment.periods
        else None  # an empty schedule needs no keeping: it is empty when read back too
    )
    next_date, maturity, at = assessment.next_payment_date, assessment.maturity_date, assessment.assessed_at
    return (
        assessment.lender_id,
        assessment.loan_id,
        assessment.loan_version,
        assessment.rule_version,
        assessment.risk_group,
        assessment.currency,
        assessment.schedule_type.value,
        assessment.periods,
        assessment.total_principal,
        assessment.total_interest,
        assessment.next_payment_amount,
        _sqlite_date(next_date) if sqlite else next_date,
        _sqlite_date(maturity) if sqlite else maturity,
        schedule,
        (at_text or _sqlite_datetime(at)) if sqlite else at,
    )


def assess_projected(
    loans: Sequence[tuple[Loan, int]],
    results: Sequence[Projection | LoanError],
    rules: RiskRuleVersion,
    assessed_at: datetime,
    sqlite: bool,
    keep_schedule: bool,
) -> AssessedRows:
    """Group projected ``(loan, version)`` pairs of one lender by ``rules``, as rows to append."""
    assessments, errors = assess_slice(
        loans, results, {rules.lender_id: rules}, assessed_at.date(), assessed_at, keep_schedule
    )
    at_text = _sqlite_datetime(assessed_at)
    return AssessedRows(
        [assessment_row(a, sqlite, at_text) for a in assessments],
        [(e.loan_id, e.field, e.message) for e in errors],
    )


def project_and_assess(
    loaded: LoadedSlice, lender_id: str, rules: RiskRuleVersion, assessed_at: datetime, sqlite: bool
) -> AssessedRows:
    """The whole built-in assessment of a slice. The schedules are not kept: they follow from the stored
    loan version alone, and are projected again when asked for."""
    if loaded.build is None and not rules.compiled().reads_extras:
        return assess_versions(lender_id, loaded.rows, rules, assessed_at, sqlite)
    loans = loaded.loans(lender_id)
    results = project_many([loan for loan, _ in loans])
    return assess_projected(loans, results, rules, assessed_at, sqlite, keep_schedule=False)


def assess_versions(
    lender_id: str,
    rows: Sequence[Sequence[Any]],
    rules: RiskRuleVersion,
    assessed_at: datetime,
    sqlite: bool,
) -> AssessedRows:
    """The built-in assessment of loan versions given as :data:`VERSION_COLUMNS` rows, by rules that read
    no extra attribute: what :func:`project_and_assess` makes of the same loans, row for row, without
    making a :class:`Loan` or a schedule (only the totals an assessment keeps)."""
    compiled = rules.compiled()
    if compiled.reads_extras:
        raise ValueError("these rules read extra attributes, which only the loans' documents have")
    as_of = assessed_at.date()
    at: Any = _sqlite_datetime(assessed_at) if sqlite else assessed_at
    # The values are as the store gives them: integers as int, the rate as text, dates as date or ISO text.
    # First what can be projected, for project_totals to take in one go; the rest is refused.
    work: list[Work] = []
    due_dates: list[date | None] = []
    refused: dict[int, LoanError] = {}
    for position, row in enumerate(rows):
        due = _day_or_none(row[10])
        due_dates.append(due)
        outstanding = row[5]
        if outstanding == 0:
            continue
        kind, rate, term = schedule_kind(row[8]), float(row[6]), row[7]
        if due is None or not projectable(kind, outstanding, rate, term):
            refused[position] = why_not(version_loan(lender_id, row))
            continue
        assert kind is not None
        issued = _day(row[9])
        left = periods_left(term, issued.year, issued.month, due.year, due.month)
        work.append((kind, left, position, outstanding, rate))
    totals = project_totals(work)
    assessed: list[tuple[Any, ...]] = []
    errors: list[tuple[str, str | None, str]] = []
    rates: dict[str, Decimal] = {}  # tapes repeat a few rates
    version, group_of = rules.version, compiled.group_of_facts
    for position, row in enumerate(rows):
        found = totals.get(position, NOTHING_OWED) if row[5] else NOTHING_OWED
        if found is None or position in refused:
            error = refused.get(position) or out_of_range(version_loan(lender_id, row), _left(row))
            errors.append((error.loan_id, error.field, error.message))
            continue
        due = due_dates[position]
        annual = rates.get(row[6])
        if annual is None:
            annual = rates[row[6]] = Decimal(row[6])
        periods, next_payment = found.periods, found.next_payment
        facts = LoanFacts(
            row[2],
            row[3],
            row[4],
            row[5],
            annual,
            row[7],
            row[8],
            due,
            row[12],
            row[13],
            row[14],
            row[15],
            periods,
            next_payment,
        )
        maturity = add_months(due, periods - 1) if due is not None and periods else due
        if sqlite:
            due_text = row[10] if due is None or type(row[10]) is str else due.isoformat()
            maturity_text = maturity.isoformat() if maturity is not None else None
        assessed.append(
            (
                lender_id,
                row[0],
                row[1],
                version,
                group_of(facts, as_of),
                row[3],
                row[8],
                periods,
                row[5],
                found.total_interest,
                next_payment,
                due_text if sqlite else due,
                maturity_text if sqlite else maturity,
                None,
                at,
            )
        )
    return AssessedRows(assessed, errors)


_STATUS = {status.value: status for status in LoanStatus}
_SCHEDULE = {schedule.value: schedule for schedule in ScheduleType}


def version_loan(lender_id: str, r: Sequence[Any]) -> Loan:
    """The :class:`Loan` of a :data:`VERSION_COLUMNS` row (as the tape gave it, but for extra attributes and
    payments, which the row does not have)."""
    return Loan(
        lender_id=lender_id,
        loan_id=r[0],
        status=_STATUS[r[2]],
        currency=r[3],
        principal=int(r[4]),
        outstanding_principal=int(r[5]),
        interest_rate=Decimal(r[6]),
        term_months=int(r[7]),
        schedule_type=_SCHEDULE[r[8]],
        issue_date=_day(r[9]),
        next_payment_date=_day_or_none(r[10]),
        all_or_nothing=bool(r[11]),
        borrower=Borrower(country=r[12], age=int(r[13]), income_monthly=int(r[14]), credit_score=int(r[15])),
    )


def _left(row: Sequence[Any]) -> int:
    issued, due = _day(row[9]), _day_or_none(row[10])
    assert due is not None
    return periods_left(int(row[7]), issued.year, issued.month, due.year, due.month)


def _day(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _day_or_none(value: date | str | None) -> date | None:
    return None if value is None else _day(value)
