"""Intake's side of the assess stage: loading the loan versions a slice hands on, and recording per slice
how many were assessed and which were refused (with the reason, in the batch's errors)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import bson
from sqlalchemy import Connection, insert, select, tuple_

from tranche.assessment.errors import LoanError
from tranche.assessment.stage import ASSESS, AssessStage
from tranche.assessment.store import latest_risk_rules
from tranche.assessment.tables import loan_assessments
from tranche.intake.events import AssessedLoan, LoansAssessed
from tranche.intake.loan import Borrower, Loan, LoanStatus, ScheduleType
from tranche.intake.parse import ParseOptions, parse_loan
from tranche.intake.stages import Publish
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


def assess_stage(assess: AssessStage, publish: Publish | None = None) -> Stage:
    """The assess stage with intake's per-slice bookkeeping around its commit, and ``loan.<lender>.assessed``
    published (through the outbox, in the same transaction) for the loans that may now be offered.

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
        if publish is not None:
            keys = [(loan.loan_id, version) for loan, version in projected.loans]
            groups = _risk_groups(conn, item.partition, keys)
            if groups:
                event = LoansAssessed(item.partition, p["batch_id"], tuple(AssessedLoan(*g) for g in groups))
                publish(conn, f"loan.{item.partition}.assessed", event)
        return nxt

    return replace(stage, commit=commit)


def _risk_groups(
    conn: Connection, lender_id: str, keys: Sequence[tuple[str, int]]
) -> list[tuple[str, int, str]]:
    if not keys:
        return []
    a = loan_assessments.c
    rows = (
        conn.execute(
            select(a.loan_id, a.loan_version, a.risk_group).where(
                a.lender_id == lender_id, tuple_(a.loan_id, a.loan_version).in_(list(keys))
            )
        )
        .tuples()
        .all()
    )
    order = {key: i for i, key in enumerate(keys)}
    return sorted(((r[0], int(r[1]), r[2]) for r in rows), key=lambda r: order.get((r[0], r[1]), 0))


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


def load_documents(
    conn: Connection, lender_id: str, keys: Sequence[tuple[str, int]]
) -> list[tuple[Loan, int]]:
    """The loan versions named by (loan_id, version), in that order, read from the documents as the lender
    sent them: with their payments and unknown fields (what settling repayments needs)."""
    if not keys:
        return []
    v = loan_versions.c
    rows = (
        conn.execute(
            select(v.loan_id, v.version, v.format, v.body).where(
                v.lender_id == lender_id, tuple_(v.loan_id, v.version).in_(list(keys))
            )
        )
        .tuples()
        .all()
    )
    found = {(r[0], int(r[1])): r for r in rows}
    # The documents were valid when they were stored; a later configuration change does not undo that.
    options = ParseOptions(allow_double_amounts=True)
    loans = []
    for key in keys:
        row = found.get(key)
        if row is None:
            continue
        decoded = bson.decode(bytes(row[3])) if row[2] == "bson" else json.loads(bytes(row[3]))
        loan = parse_loan(lender_id, decoded, options)
        if isinstance(loan, Loan):
            loans.append((loan, key[1]))
    return loans


def load_for_assessment(
    conn: Connection, lender_id: str, keys: Sequence[tuple[str, int]]
) -> list[tuple[Loan, int]]:
    """What the assess stage projects and groups: the stored columns, which is all the projection and the
    usual rules need; or the whole documents when the lender's rules look at the borrower's or the loan's
    extra attributes (``borrower.<name>``, ``loan.<name>``)."""
    rules = latest_risk_rules(conn, lender_id).rules
    if any("." in condition.field for rule in rules.rules for condition in rule.all):
        return load_documents(conn, lender_id, keys)
    return load_versions(conn, lender_id, keys)
