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
from typing import Any

from tranche.assessment.domain import Assessment, RiskRuleVersion, assess_slice
from tranche.assessment.errors import LoanError
from tranche.assessment.projection import Projection, project_many
from tranche.intake.loan import Loan

__all__ = [
    "COLUMNS",
    "AssessedRows",
    "LoadedSlice",
    "assess_projected",
    "assessment_row",
    "project_and_assess",
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


@dataclass(frozen=True, slots=True)
class LoadedSlice:
    """Loan versions as the store gave them (plain tuples), with the module-level function that makes them
    ``(loan, version)`` pairs; both pickle, so the loans may be made in another process."""

    rows: list[tuple[Any, ...]]
    build: Callable[[str, list[tuple[Any, ...]]], list[tuple[Loan, int]]]

    def loans(self, lender_id: str) -> list[tuple[Loan, int]]:
        return self.build(lender_id, self.rows)


@dataclass(frozen=True, slots=True)
class AssessedRows:
    """A slice assessed: the ``loan_assessments`` rows to append (:data:`COLUMNS`), each assessed loan as
    ``[loan_id, version, risk_group]``, and the loans that cannot be assessed as ``(loan_id, field,
    message)``."""

    rows: list[tuple[Any, ...]]
    assessed: list[list[Any]]
    refused: list[tuple[str, str | None, str]]

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
        if assessment.has_schedule
        else None
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
        [[a.loan_id, a.loan_version, a.risk_group] for a in assessments],
        [(e.loan_id, e.field, e.message) for e in errors],
    )


def project_and_assess(
    loaded: LoadedSlice, lender_id: str, rules: RiskRuleVersion, assessed_at: datetime, sqlite: bool
) -> AssessedRows:
    """The whole built-in assessment of a slice. The schedules are not kept: they follow from the stored
    loan version alone, and are projected again when asked for."""
    loans = loaded.loans(lender_id)
    results = project_many([loan for loan, _ in loans])
    return assess_projected(loans, results, rules, assessed_at, sqlite, keep_schedule=False)
