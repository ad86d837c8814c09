"""The assessment routes: risk rules per lender, versioned, and a loan's assessments."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from assessment_loans import make_loan
from fastapi import FastAPI
from sqlalchemy import Engine

from tranche.api.assessment import router
from tranche.api.errors import install_error_handlers
from tranche.assessment.handlers import project_slice, record_assessments
from tranche.assessment.projectors import BuiltinCashflowProjector
from tranche.shared.clock import ManualClock
from tranche.testing.ports import free_port

CLOCK = ManualClock(datetime(2026, 2, 1, 8, 0, tzinfo=UTC))
RULES = {"rules": [{"group": "B", "all": [{"field": "country", "op": "in", "value": ["EE", "LV"]}]}]}


@pytest.fixture
def api(engine: Engine) -> Iterator[httpx.Client]:
    """The assessment routes alone, served over loopback with the engine and a manual clock."""
    app = FastAPI()
    app.state.container = SimpleNamespace(engine=engine, clock=CLOCK)
    install_error_handlers(app)
    app.include_router(router, prefix="/v1")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield client
    server.should_exit = True
    thread.join(10)


def test_operators_read_the_defaults_then_put_new_versions_of_a_lenders_rules(api: httpx.Client) -> None:
    assert api.get("/v1/lenders/acme/risk-rules").json()["version"] == 0
    first = api.put("/v1/lenders/acme/risk-rules", json=RULES)
    assert first.status_code == 200 and first.json()["version"] == 1
    second = api.put("/v1/lenders/acme/risk-rules?based_on=1", json={**RULES, "default": "A"})
    assert second.json()["version"] == 2
    current = api.get("/v1/lenders/acme/risk-rules").json()
    assert (current["version"], current["rules"]["default"]) == (2, "A")
    versions = api.get("/v1/lenders/acme/risk-rules/versions").json()["versions"]
    assert [v["version"] for v in versions] == [1, 2]


def test_invalid_rules_are_refused_naming_the_field(api: httpx.Client) -> None:
    bad = {"rules": [{"group": "A", "all": [{"field": "credit_score", "op": "=>", "value": 700}]}]}
    response = api.put("/v1/lenders/acme/risk-rules", json=bad)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "rules[0].all[0].op"


def test_a_save_based_on_an_old_version_is_a_conflict(api: httpx.Client) -> None:
    api.put("/v1/lenders/acme/risk-rules", json=RULES)
    assert api.put("/v1/lenders/acme/risk-rules?based_on=0", json=RULES).status_code == 409


def test_a_loans_assessments_show_its_group_rule_version_and_dated_schedule(
    api: httpx.Client, engine: Engine
) -> None:
    assert api.get("/v1/lenders/lender-1/loans/L1/assessments").status_code == 404
    api.put("/v1/lenders/lender-1/risk-rules", json=RULES)
    slice_ = [(make_loan("L1", term=3), 2)]
    with engine.begin() as conn:
        record_assessments(
            conn, slice_, project_slice(BuiltinCashflowProjector(), [make_loan("L1", term=3)]), CLOCK
        )
    body = api.get("/v1/lenders/lender-1/loans/L1/assessments").json()
    [assessment] = body["assessments"]
    assert (assessment["risk_group"], assessment["rule_version"], assessment["loan_version"]) == ("B", 1, 2)
    assert [p["date"] for p in assessment["schedule"]] == ["2026-02-15", "2026-03-15", "2026-04-15"]
    assert sum(p["principal"] for p in assessment["schedule"]) == 1_000_000
