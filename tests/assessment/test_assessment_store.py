"""Versioned risk rules and append-only assessments in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from assessment_loans import make_loan
from sqlalchemy import Engine, func, select

from tranche.assessment.domain import Assessment, RiskRuleVersion, assess_slice
from tranche.assessment.errors import LoanError, RiskRulesConflictError
from tranche.assessment.projection import project_many
from tranche.assessment.rules import DEFAULT_RULES, parse_risk_rules
from tranche.assessment.store import (
    assessment_history,
    latest_assessments,
    latest_risk_rules,
    latest_risk_rules_many,
    risk_rules_history,
    save_risk_rules,
    write_assessments,
)
from tranche.assessment.tables import loan_assessments, risk_rules
from tranche.shared.loan import Loan

NOW = datetime(2026, 2, 1, 9, 30, tzinfo=UTC)
STRICT = parse_risk_rules(
    {"rules": [{"group": "A", "all": [{"field": "credit_score", "op": ">=", "value": 900}]}]}
)
LENIENT = parse_risk_rules({"rules": [{"group": "A", "all": []}]})


def assessed(
    slice_: list[tuple[Loan, int]], rules: dict[str, RiskRuleVersion] | None = None
) -> list[Assessment]:
    results = project_many([loan for loan, _ in slice_])
    assessments, errors = assess_slice(slice_, results, rules or {}, NOW.date(), NOW)
    assert errors == []
    return assessments


def test_a_lender_without_rules_gets_the_default_rules_as_version_zero(engine: Engine) -> None:
    with engine.begin() as conn:
        latest = latest_risk_rules(conn, "lender-1")
    assert (latest.version, latest.rules) == (0, DEFAULT_RULES)


def test_each_save_appends_a_version_and_the_latest_applies(engine: Engine) -> None:
    with engine.begin() as conn:
        first = save_risk_rules(conn, "lender-1", STRICT, NOW)
        second = save_risk_rules(conn, "lender-1", LENIENT, NOW + timedelta(hours=1))
        save_risk_rules(conn, "lender-2", STRICT, NOW)
    assert (first.version, second.version) == (1, 2)
    with engine.begin() as conn:
        latest = latest_risk_rules(conn, "lender-1")
        history = risk_rules_history(conn, "lender-1")
        many = latest_risk_rules_many(conn, ["lender-1", "lender-2", "lender-3"])
        stored = conn.execute(select(func.count()).select_from(risk_rules)).scalar_one()
    assert (latest.version, latest.rules, latest.created_at) == (2, LENIENT, NOW + timedelta(hours=1))
    assert [v.rules for v in history] == [STRICT, LENIENT]
    assert {lender: v.version for lender, v in many.items()} == {"lender-1": 2, "lender-2": 1, "lender-3": 0}
    assert stored == 3  # nothing was overwritten


def test_a_save_based_on_an_outdated_version_is_refused_and_stores_nothing(engine: Engine) -> None:
    with engine.begin() as conn:
        save_risk_rules(conn, "lender-1", STRICT, NOW, based_on=0)
        with pytest.raises(RiskRulesConflictError) as caught:
            save_risk_rules(conn, "lender-1", LENIENT, NOW, based_on=0)
        assert caught.value.field == "version"
        assert latest_risk_rules(conn, "lender-1").rules == STRICT
        assert save_risk_rules(conn, "lender-1", LENIENT, NOW, based_on=1).version == 2


def test_assessments_record_the_rule_version_and_read_back_with_their_schedule(engine: Engine) -> None:
    with engine.begin() as conn:
        version = save_risk_rules(conn, "lender-1", LENIENT, NOW)
    slice_ = [(make_loan("L1"), 1), (make_loan("L2", term=12, rate="0.05"), 3)]
    assessments = assessed(slice_, {"lender-1": version})
    with engine.begin() as conn:
        write_assessments(conn, assessments)
    with engine.begin() as conn:
        latest = latest_assessments(conn, [("lender-1", "L1"), ("lender-1", "L2"), ("lender-1", "none")])
    assert set(latest) == {("lender-1", "L1"), ("lender-1", "L2")}
    assert latest["lender-1", "L2"] == assessments[1]
    record = latest["lender-1", "L1"]
    assert (record.loan_version, record.rule_version, record.risk_group) == (1, 1, "A")
    assert record.projection().total_principal == 1_000_000
    assert record.next_payment_date == date(2026, 2, 15) and record.maturity_date == date(2029, 1, 15)


def test_writing_the_same_assessments_again_stores_nothing_more(engine: Engine) -> None:
    assessments = assessed([(make_loan(f"L{i}"), 1) for i in range(5)])
    for _ in range(2):
        with engine.begin() as conn:
            write_assessments(conn, assessments)
    with engine.begin() as conn:
        assert conn.execute(select(func.count()).select_from(loan_assessments)).scalar_one() == 5


def test_a_new_loan_version_or_rule_version_appends_and_becomes_the_latest(engine: Engine) -> None:
    loan = make_loan("L1")
    with engine.begin() as conn:
        write_assessments(conn, assessed([(loan, 1)]))
        strict = save_risk_rules(conn, "lender-1", STRICT, NOW)
        write_assessments(conn, assessed([(loan, 1)], {"lender-1": strict}))
        write_assessments(conn, assessed([(make_loan("L1", outstanding=500_000), 2)], {"lender-1": strict}))
    with engine.begin() as conn:
        history = assessment_history(conn, "lender-1", "L1")
        latest = latest_assessments(conn, [("lender-1", "L1")])["lender-1", "L1"]
    assert [(a.loan_version, a.rule_version, a.risk_group) for a in history] == [
        (1, 0, "A"),
        (1, 1, "C"),
        (2, 1, "C"),
    ]
    assert (latest.loan_version, latest.total_principal) == (2, 500_000)


def test_assessments_without_their_schedule_keep_the_summary(engine: Engine) -> None:
    slice_ = [(make_loan("L1"), 1)]
    assessments, _ = assess_slice(
        slice_, project_many([make_loan("L1")]), {}, NOW.date(), NOW, keep_schedule=False
    )
    with engine.begin() as conn:
        write_assessments(conn, assessments)
        record = latest_assessments(conn, [("lender-1", "L1")])["lender-1", "L1"]
    assert (record.periods, record.has_schedule, record.total_principal) == (36, False, 1_000_000)
    with pytest.raises(ValueError):
        record.projection()


def test_many_loans_are_read_back_across_chunks(engine: Engine) -> None:
    assessments = assessed([(make_loan(f"L{i:04}", outstanding=1000 + i), 1) for i in range(1200)])
    with engine.begin() as conn:
        write_assessments(conn, assessments)
        latest = latest_assessments(conn, [("lender-1", f"L{i:04}") for i in range(1200)])
    assert len(latest) == 1200
    assert latest["lender-1", "L1199"].total_principal == 2199


def test_an_unprojectable_loan_is_reported_and_not_assessed() -> None:
    slice_ = [(make_loan("L1"), 1), (make_loan("BAD", rate="-1"), 1)]
    assessments, errors = assess_slice(
        slice_, project_many([loan for loan, _ in slice_]), {}, NOW.date(), NOW
    )
    assert [a.loan_id for a in assessments] == ["L1"]
    assert [(e.loan_id, e.field) for e in errors] == [("BAD", "interest_rate")]
    assert all(isinstance(e, LoanError) for e in errors)


def test_an_assessment_time_in_another_zone_reads_back_as_the_same_instant(engine: Engine) -> None:
    helsinki = timezone(timedelta(hours=2))
    at = datetime(2026, 2, 1, 11, 30, 15, 123456, tzinfo=helsinki)
    slice_ = [(make_loan("L1"), 1)]
    assessments, _ = assess_slice(slice_, project_many([make_loan("L1")]), {}, at.date(), at)
    with engine.begin() as conn:
        write_assessments(conn, assessments)
        record = latest_assessments(conn, [("lender-1", "L1")])["lender-1", "L1"]
    assert record.assessed_at == at
    assert record.assessed_at.utcoffset() == timedelta(0)
