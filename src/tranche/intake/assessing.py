"""Intake's side of assessment: loading the loan versions a slice hands on to the assess stage, assessing them
in the diff itself when the built-in projection can (:class:`DiffAssessment`), and recording per slice how
many were assessed and which were refused (with the reason, in the batch's errors)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import bson
from sqlalchemy import Connection, insert, select

from tranche.assessment.errors import LoanError
from tranche.assessment.rules import RiskRules, compile_rules
from tranche.assessment.slices import (
    VERSION_COLUMNS,
    AssessedRows,
    LoadedSlice,
    assess_versions,
    version_loan,
)
from tranche.assessment.stage import ASSESS, AssessStage
from tranche.assessment.store import latest_risk_rules, write_assessment_rows
from tranche.intake import bulk
from tranche.intake.events import AssessedLoan, LoansAssessed
from tranche.intake.parse import ParseOptions, parse_loan
from tranche.intake.parsing import AssessOrder
from tranche.intake.stages import Prepare, Publish
from tranche.intake.tables import assess_results, batch_errors, loan_versions
from tranche.pipeline import Item, Next, Stage
from tranche.shared.clock import Clock
from tranche.shared.loan import Loan

_COLUMNS = ", ".join(f"v.{name}" for name in VERSION_COLUMNS)


def version_rows(conn: Connection, lender_id: str, keys: Sequence[tuple[str, int]]) -> list[tuple[Any, ...]]:
    """The stored columns of the loan versions named by (loan_id, version), in that order (those missing
    left out), as plain tuples for :func:`loans_from_columns`."""
    return bulk.rows_by_version(conn, lender_id, keys, _COLUMNS)


def loans_from_columns(lender_id: str, rows: list[tuple[Any, ...]]) -> list[tuple[Loan, int]]:
    """(loan, version) of each row of :func:`version_rows`."""
    return [(version_loan(lender_id, r), int(r[1])) for r in rows]


def load_versions(
    conn: Connection, lender_id: str, keys: Sequence[tuple[str, int]]
) -> list[tuple[Loan, int]]:
    """The loan versions named by (loan_id, version), in that order, from their stored columns."""
    return loans_from_columns(lender_id, version_rows(conn, lender_id, keys))


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
        return assessed, _assessed_event(item, assessed, publish, prepare)

    def commit(conn: Connection, item: Item, done: tuple[AssessedRows, object | None]) -> Next:
        assessed, event = done
        nxt = assess.commit(conn, item, assessed)
        _record_slice(conn, item, assessed, event, assess.clock, publish)
        return nxt

    return replace(stage, work=work, commit=commit)


class DiffAssessment:
    """The built-in assessment, made by the diff stage itself (an :class:`~tranche.intake.stages.
    InlineAssessment`): when the projection is computed in this process and the lender's rules read only
    stored columns, the loans a slice lists or changes are assessed in the diff's own pool call, from the
    columns just parsed, and stored in the diff's transaction. Pure CPU has nothing to retry and no
    dependency to wait for, so it needs no stage of its own; what it records (the assessments, the refused
    loans, the slice's counts, ``loan.<lender>.assessed``) is exactly what the assess stage records.

    Otherwise (an external cash-flow service, rules that read extra attributes from the documents) the diff
    hands the slice on to the assess stage.
    """

    def __init__(self, assess: AssessStage, publish: Publish | None = None, prepare: Prepare | None = None):
        self.assess = assess
        self.publish = publish
        self.prepare_event = prepare

    def order(self, conn: Connection, lender_id: str) -> AssessOrder | None:
        if not self.assess.projector.in_process:
            return None
        rules = latest_risk_rules(conn, lender_id)
        if rules.compiled().reads_extras:
            return None
        sqlite = self.assess.engine.dialect.name == "sqlite"
        return AssessOrder(assess_versions, (rules, self.assess.clock.now(), sqlite))

    def prepare(self, item: Item, assessed: AssessedRows) -> object | None:
        return _assessed_event(item, assessed, self.publish, self.prepare_event)

    def record(
        self,
        conn: Connection,
        item: Item,
        assessed: AssessedRows,
        prepared: object | None,
        documents: Callable[[], Mapping[str, int]],
    ) -> None:
        if not assessed.rows and not assessed.refused:
            return
        write_assessment_rows(conn, assessed.rows)
        if assessed.refused:
            _insert_refused(conn, item, assessed.errors(item.partition), documents())
        _record_slice(conn, item, assessed, prepared, self.assess.clock, self.publish)


def _assessed_event(
    item: Item, assessed: AssessedRows, publish: Publish | None, prepare: Prepare | None
) -> object | None:
    """``loan.<lender>.assessed`` for the loans of a slice that were assessed (None if none were, or nothing
    is published), passed through ``prepare``."""
    if publish is None or not assessed.rows:
        return None
    topic = f"loan.{item.partition}.assessed"
    # Straight from the rows (loan_id, version and risk group are their second, third and fifth values).
    loans = tuple(AssessedLoan(row[1], row[2], row[4]) for row in assessed.rows)
    event: object = LoansAssessed(item.partition, item.payload["batch_id"], loans)
    return prepare(topic, event) if prepare is not None else event


def _record_slice(
    conn: Connection,
    item: Item,
    assessed: AssessedRows,
    event: object | None,
    clock: Clock,
    publish: Publish | None,
) -> None:
    """A slice's assessment counts, and its event published, in the transaction that stores its assessments."""
    p = item.payload
    conn.execute(
        insert(assess_results).values(
            batch_id=p["batch_id"],
            run=p["run"],
            slice=p["slice"],
            assessed=len(assessed.rows),
            refused=len(assessed.refused),
            done_at=clock.now(),
        )
    )
    if publish is not None and event is not None:
        publish(conn, f"loan.{item.partition}.assessed", event)


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
    _insert_refused(conn, item, errors, positions)


def _insert_refused(
    conn: Connection, item: Item, errors: list[LoanError], positions: Mapping[str, int]
) -> None:
    p = item.payload
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
    if compile_rules(rules).reads_extras:
        return LoadedSlice(document_rows(conn, lender_id, keys), loans_from_documents)
    return LoadedSlice(version_rows(conn, lender_id, keys))
