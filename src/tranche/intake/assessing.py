"""Intake's side of the assess stage: loading the loan versions a slice hands on, and recording per slice
how many were assessed and which were refused (with the reason, in the batch's errors)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, insert, select, tuple_

from tranche.assessment.errors import LoanError
from tranche.assessment.stage import ASSESS, AssessStage
from tranche.intake.loan import Borrower, Loan, LoanStatus, ScheduleType
from tranche.intake.tables import assess_results, batch_errors, loan_versions
from tranche.pipeline import Item, Next, Stage


def load_versions(
    conn: Connection, lender_id: str, keys: Sequence[tuple[str, int]]
) -> list[tuple[Loan, int]]:
    """The loan versions named by (loan_id, version), in that order, from their stored columns."""
    if not keys:
        return []
    v = loan_versions.c
    rows = conn.execute(
        select(
            v.loan_id,
            v.version,
            v.status,
            v.currency,
            v.principal,
            v.outstanding_principal,
            v.interest_rate,
            v.term_months,
            v.schedule_type,
            v.issue_date,
            v.next_payment_date,
            v.all_or_nothing,
            v.borrower_country,
            v.borrower_age,
            v.borrower_income_monthly,
            v.borrower_credit_score,
        ).where(v.lender_id == lender_id, tuple_(v.loan_id, v.version).in_(list(keys)))
    ).all()
    found = {(r.loan_id, r.version): r for r in rows}
    return [(_loan(lender_id, found[key]), key[1]) for key in keys if key in found]


def _loan(lender_id: str, r: Any) -> Loan:
    return Loan(
        lender_id=lender_id,
        loan_id=r.loan_id,
        status=LoanStatus(r.status),
        currency=r.currency,
        principal=int(r.principal),
        outstanding_principal=int(r.outstanding_principal),
        interest_rate=Decimal(r.interest_rate),
        term_months=int(r.term_months),
        schedule_type=ScheduleType(r.schedule_type),
        issue_date=_day(r.issue_date),
        next_payment_date=None if r.next_payment_date is None else _day(r.next_payment_date),
        all_or_nothing=bool(r.all_or_nothing),
        borrower=Borrower(
            country=r.borrower_country,
            age=int(r.borrower_age),
            income_monthly=int(r.borrower_income_monthly),
            credit_score=int(r.borrower_credit_score),
        ),
    )


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def assess_stage(assess: AssessStage) -> Stage:
    """The assess stage with intake's per-slice bookkeeping around its commit.

    ``assess`` must report its refused loans through :func:`report_refused`.
    """
    stage = assess.stage()

    def commit(conn: Connection, item: Item, projected: Any) -> Next:
        nxt = stage.commit(conn, item, projected)
        p = item.payload
        e = batch_errors.c
        refused = len(
            conn.execute(
                select(e.loan_id).where(
                    e.batch_id == p["batch_id"],
                    e.run == p["run"],
                    e.stage == ASSESS,
                    e.loan_id.in_([loan.loan_id for loan, _version in projected.loans]),
                )
            ).all()
        )
        conn.execute(
            insert(assess_results).values(
                batch_id=p["batch_id"],
                run=p["run"],
                slice=p["slice"],
                assessed=len(projected.loans) - refused,
                refused=refused,
                done_at=assess.clock.now(),
            )
        )
        return nxt

    return replace(stage, commit=commit)


def report_refused(conn: Connection, item: Item, errors: list[LoanError]) -> None:
    """Record the loans the assess stage refused in the batch's errors, at their place in the tape."""
    if not errors:
        return
    p = item.payload
    v = loan_versions.c
    positions = dict(
        conn.execute(
            select(v.loan_id, v.document).where(
                v.lender_id == item.partition,
                v.batch_id == p["batch_id"],
                v.loan_id.in_([e.loan_id for e in errors]),
            )
        )
        .tuples()
        .all()
    )
    conn.execute(
        insert(batch_errors),
        [
            {
                "batch_id": p["batch_id"],
                "run": p["run"],
                "document": positions.get(e.loan_id, -1),
                "loan_id": e.loan_id,
                "field": e.field or "(assessment)",
                "reason": e.message,
                "stage": ASSESS,
            }
            for e in errors
        ],
    )
