"""Assessing a slice end to end: projector, latest rules, assessments in the store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from assessment_loans import make_loan
from sqlalchemy import Engine, func, select

from tranche.assessment.errors import RetryableServiceError
from tranche.assessment.handlers import project_slice, record_assessments
from tranche.assessment.projectors import BuiltinCashflowProjector
from tranche.assessment.remote import HttpCashflowClient
from tranche.assessment.rules import parse_risk_rules
from tranche.assessment.service import CashflowServer
from tranche.assessment.store import latest_assessments, save_risk_rules
from tranche.assessment.tables import loan_assessments
from tranche.shared.clock import ManualClock

CLOCK = ManualClock(datetime(2026, 2, 1, 8, 0, tzinfo=UTC))
EVERYONE_B = parse_risk_rules({"rules": [{"group": "B", "all": []}]})


def test_a_slice_is_assessed_with_each_lenders_latest_rules_and_its_bad_loans_are_reported(
    engine: Engine,
) -> None:
    slice_ = [
        (make_loan("L1", lender_id="lender-1"), 1),
        (make_loan("L2", lender_id="lender-2"), 4),
        (make_loan("BAD", lender_id="lender-2", next_payment=None), 1),
    ]
    with engine.begin() as conn:
        save_risk_rules(conn, "lender-2", EVERYONE_B, CLOCK.now())
    results = project_slice(BuiltinCashflowProjector(), [loan for loan, _ in slice_])
    with engine.begin() as conn:
        outcome = record_assessments(conn, slice_, results, CLOCK)
    assert [(a.loan_id, a.risk_group, a.rule_version) for a in outcome.assessments] == [
        ("L1", "A", 0),
        ("L2", "B", 1),
    ]
    assert [(e.loan_id, e.field) for e in outcome.errors] == [("BAD", "next_payment_date")]
    with engine.begin() as conn:
        stored = latest_assessments(conn, [("lender-1", "L1"), ("lender-2", "L2"), ("lender-2", "BAD")])
    assert set(stored) == {("lender-1", "L1"), ("lender-2", "L2")}
    assert stored["lender-2", "L2"].assessed_at == CLOCK.now()


def test_a_slice_recorded_twice_after_a_crash_is_assessed_once(engine: Engine) -> None:
    slice_ = [(make_loan(f"L{i}"), 1) for i in range(20)]
    results = project_slice(BuiltinCashflowProjector(), [loan for loan, _ in slice_])
    for _ in range(2):
        with engine.begin() as conn:
            record_assessments(conn, slice_, results, CLOCK)
    with engine.begin() as conn:
        assert conn.execute(select(func.count()).select_from(loan_assessments)).scalar_one() == 20


def test_a_slice_through_the_external_service_gives_the_same_assessments(engine: Engine) -> None:
    slice_ = [(make_loan(f"L{i}", term=6 + i), 1) for i in range(30)]
    loans = [loan for loan, _ in slice_]
    with CashflowServer() as server, HttpCashflowClient(server.url, timeout=5) as client:
        remote = project_slice(client, loans)
        server.go_down("503")
        with pytest.raises(RetryableServiceError):
            project_slice(client, loans)
    assert remote == project_slice(BuiltinCashflowProjector(), loans)
    with engine.begin() as conn:
        outcome = record_assessments(conn, slice_, remote, CLOCK, keep_schedule=False)
    assert len(outcome.assessments) == 30 and not outcome.errors
