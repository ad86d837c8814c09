"""Assessing a slice of loan versions of any lenders, in two steps, for callers outside the pipeline (the
assess stage itself goes through :mod:`tranche.assessment.slices`, which can run in a compute pool).

:func:`project_slice` calls the projector (outside any transaction, may fail and be retried);
:func:`record_assessments` reads each lender's latest risk rules, assigns groups and appends the
assessments in the caller's transaction::

    results = project_slice(projector, [loan for loan, _ in slice_])      # RetryableServiceError, ...
    with engine.begin() as conn:
        outcome = record_assessments(conn, slice_, results, clock)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from tranche.assessment.domain import Assessment, assess_slice
from tranche.assessment.errors import LoanError
from tranche.assessment.projection import Projection
from tranche.assessment.projectors import CashflowProjector
from tranche.assessment.store import latest_risk_rules_many, write_assessments
from tranche.shared.clock import Clock
from tranche.shared.loan import Loan

__all__ = ["AssessOutcome", "project_slice", "record_assessments"]


@dataclass(frozen=True, slots=True)
class AssessOutcome:
    """What became of a slice: the loans assessed, and those that cannot be (terminal, with the reason)."""

    assessments: list[Assessment]
    errors: list[LoanError]


def project_slice(projector: CashflowProjector, loans: Sequence[Loan]) -> list[Projection | LoanError]:
    """Project a slice; raises :class:`~tranche.assessment.errors.RetryableServiceError` or
    :class:`~tranche.assessment.errors.TerminalServiceError` if the projector's call fails as a whole."""
    results = projector.project_many(loans)
    if len(results) != len(loans):
        raise RuntimeError(f"the projector answered {len(results)} results for {len(loans)} loans")
    return results


def record_assessments(
    conn: Connection,
    loans: Sequence[tuple[Loan, int]],
    results: Sequence[Projection | LoanError],
    clock: Clock,
    keep_schedule: bool = True,
) -> AssessOutcome:
    """Assess projected (loan, version) pairs with their lenders' latest rules and append the assessments
    in the caller's transaction. Idempotent: a slice recorded twice stores each assessment once."""
    now = clock.now()
    rules = latest_risk_rules_many(conn, {loan.lender_id for loan, _ in loans})
    assessments, errors = assess_slice(loans, results, rules, now.date(), now, keep_schedule)
    write_assessments(conn, assessments)
    return AssessOutcome(assessments, errors)
