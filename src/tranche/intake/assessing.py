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
from sqlalchemy import Connection, insert, select

from tranche.assessment.errors import LoanError
from tranche.assessment.rules import RiskRules
from tranche.assessment.slices import AssessedRows, LoadedSlice
from tranche.assessment.stage import ASSESS, AssessStage
from tranche.intake import bulk
from tranche.intake.events import AssessedLoan, LoansAssessed
from tranche.intake.loan import Borrower, Loan, LoanStatus, ScheduleType
from tranche.intake.parse import ParseOptions, parse_loan
from tranche.intake.stages import Prepare, Publish
from tranche.intake.tables import assess_results, batch_errors, loan_versions
from tranche.pipeline import Item, Next, Stage

_COLUMNS = ", ".join(
    f"v.{name}"
    for name in (
        "loan_id version status currency principal outstanding_principal interest_rate term_months"
        " schedule_type issue_date next_payment_date all_or_nothing borrower_country borrower_age"
        " borrower_income_monthly borrower_credit_score"
    ).split()
)


def version_rows(conn: Connection, lender_id: str, keys: Sequence[tuple[str, int]]) -> list[tuple[Any, ...]]:
    """The stored columns of the loan versions named by (loan_id, version), in that order (those missing
    left out), as plain tuples for :func:`loans_from_columns`."""
    return bulk.rows_by_version(conn, lender_id, keys, _COLUMNS)


def loans_from_columns(lender_id: str, rows: list[tuple[Any, ...]]) -> list[tuple[Loan, int]]:
    """(loan, version) of each row of :func:`version_rows`."""
    return [(_loan(lender_id, r), int(r[1])) for r in rows]


def load_versions(
    conn: Connection, lender_id: str, keys: Sequence[tuple[str, int]]
) -> list[tuple[Loan, int]]:
    """The loan versions named by (loan_id, version), in that order, from their stored columns."""
    return loans_from_columns(lender_id, version_rows(conn, lender_id, keys))


_STATUS = {status.value: status for status in LoanStatus}
_SCHEDULE = {schedule.value: schedule for schedule in ScheduleType}


def _loan(lender_id: str, r: Any) -> Loan:
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
        next_payment_date=None if r[10] is None else _day(r[10]),
        all_or_nothing=bool(r[11]),
        borrower=Borrower(country=r[12], age=int(r[13]), income_monthly=int(r[14]), credit_score=int(r[15])),
    )


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def assess_stage(
    assess: AssessStage, publish: Publish | None = None, prepare: Prepare | None = None
) -> Stage:
    """The assess stage with intake's per-slice bookkeeping around its commit, and ``loan.<lender>.assessed``
    published (through the outbox, in the same transaction) for the loans that may now be offered. The event
    is made, and passed through ``prepare``, before that transaction.

    ``assess`` must report its refused loans through :func:`report_refused`.
    """
    stage = assess.stage()

    def work(item: Item) -> tuple[AssessedRows, object | None]:
        assessed = assess.work(item)
        event: object | None = None
        if publish is not None and assessed.assessed:
            topic = f"loan.{item.partition}.assessed"
            loans = tuple(AssessedLoan(str(a), int(v), str(g)) for a, v, g in assessed.assessed)
            event = LoansAssessed(item.partition, item.payload["batch_id"], loans)
            if prepare is not None:
                event = prepare(topic, event)
        return assessed, event

    def commit(conn: Connection, item: Item, done: tuple[AssessedRows, object | None]) -> Next:
        assessed, event = done
        nxt = assess.commit(conn, item, assessed)
        p = item.payload
        conn.execute(
            insert(assess_results).values(
                batch_id=p["batch_id"],
                run=p["run"],
                slice=p["slice"],
                assessed=len(assessed.assessed),
                refused=len(assessed.refused),
                done_at=assess.clock.now(),
            )
        )
        if publish is not None and event is not None:
            publish(conn, f"loan.{item.partition}.assessed", event)
        return nxt

    return replace(stage, work=work, commit=commit)


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


def document_rows(conn: Connection, lender_id: str, keys: Sequence[tuple[str, int]]) -> list[tuple[Any, ...]]:
    """(loan_id, version, format, document) of the loan versions named by (loan_id, version), in that order
    (those missing left out), as the lender sent them, for :func:`loans_from_documents`."""
    rows = bulk.rows_by_version(conn, lender_id, keys, "v.loan_id, v.version, v.format, v.body")
    return [(loan_id, int(version), fmt, bytes(body)) for loan_id, version, fmt, body in rows]


def loans_from_documents(lender_id: str, rows: list[tuple[Any, ...]]) -> list[tuple[Loan, int]]:
    """(loan, version) of each row of :func:`document_rows`: with their payments and unknown fields."""
    # The documents were valid when they were stored; a later configuration change does not undo that.
    options = ParseOptions(allow_double_amounts=True)
    loans = []
    for _loan_id, version, fmt, body in rows:
        decoded = bson.decode(body) if fmt == "bson" else json.loads(body)
        loan = parse_loan(lender_id, decoded, options)
        if isinstance(loan, Loan):
            loans.append((loan, version))
    return loans


def load_documents(
    conn: Connection, lender_id: str, keys: Sequence[tuple[str, int]]
) -> list[tuple[Loan, int]]:
    """The loan versions named by (loan_id, version), in that order, read from the documents as the lender
    sent them: with their payments and unknown fields (what settling repayments needs)."""
    return loans_from_documents(lender_id, document_rows(conn, lender_id, keys))


def load_for_assessment(
    conn: Connection, lender_id: str, keys: Sequence[tuple[str, int]], rules: RiskRules
) -> LoadedSlice:
    """What the assess stage projects and groups: the stored columns, which is all the projection and the
    usual rules need; or the whole documents when the lender's rules look at the borrower's or the loan's
    extra attributes (``borrower.<name>``, ``loan.<name>``)."""
    if any("." in condition.field for rule in rules.rules for condition in rule.all):
        return LoadedSlice(document_rows(conn, lender_id, keys), loans_from_documents)
    return LoadedSlice(version_rows(conn, lender_id, keys), loans_from_columns)
