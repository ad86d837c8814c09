"""Intake's assess stage against the stand-alone cash-flow service, over real loopback HTTP."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import bson
import pytest
from sqlalchemy import func, select

from tranche.assessment.service import CashflowServer, Faults
from tranche.assessment.tables import loan_assessments
from tranche.bootstrap import Container, bootstrap
from tranche.config import Settings
from tranche.crm.lenders import register_lender
from tranche.intake.tape import TapeFormat
from tranche.intake.tapegen import first_tape, write_tape
from tranche.pipeline.tables import pipeline_items

DAY = date(2026, 11, 23)


@pytest.fixture
def service() -> Iterator[CashflowServer]:
    with CashflowServer(Faults(), seed=3) as server:
        yield server


def node(database_url: str, tmp_path: Path, service: CashflowServer, **settings: object) -> Container:
    base = replace(
        Settings(),
        database_url=database_url,
        archive_dir=tmp_path / "archive",
        cashflow_url=service.url,
        parse_processes=0,
        log_level="WARNING",
    )
    container = bootstrap(replace(base, **settings))  # type: ignore[arg-type]
    with container.engine.begin() as conn:
        register_lender(conn, "acme", "Acme", at=container.clock.now())
    return container


def upload_tape(container: Container, tmp_path: Path, n: int, seed: int) -> str:
    tape = tmp_path / f"tape-{seed}.bson"
    write_tape(first_tape(n, "acme", seed, DAY), tape)
    batch = container.intake.receive("acme", TapeFormat.BSON, [tape.read_bytes()]).batch_id
    container.wake_workers()
    return batch


def wait_for(
    container: Container, batch_id: str, *, timeout: float, status: str = "completed"
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while (current := container.intake.batch_status(batch_id))["status"] != status:
        assert time.monotonic() < deadline, current
        time.sleep(0.05)
    return current


def assessments(container: Container) -> tuple[int, int]:
    a = loan_assessments.c
    with container.engine.connect() as conn:
        row = conn.execute(select(func.count(), func.count(func.distinct(a.loan_id)))).one()
    return int(row[0]), int(row[1])


@pytest.mark.slow
def test_with_a_third_of_calls_failing_every_loan_is_assessed_exactly_once(
    database_url: str, tmp_path: Path, service: CashflowServer
) -> None:
    loans = int(
        os.environ.get(
            "TRANCHE_TEST_ASSESS_LOANS", "100000" if database_url.startswith("sqlite") else "30000"
        )
    )
    service.set_faults(fail_rate=0.3, statuses=[429, 503], latency_ms=5, retry_after=0.2)
    container = node(database_url, tmp_path, service)
    container.start_workers()
    try:
        batch = upload_tape(container, tmp_path, loans, seed=1)
        status = wait_for(container, batch, timeout=600)
    finally:
        container.close()
    assert status["counts"]["assessed"] == loans and status["counts"]["not_assessed"] == 0  # type: ignore[index]
    assert assessments(container) == (loans, loans)
    assert service.counters["injected"] > 0  # the faults really happened


@pytest.mark.slow
def test_an_outage_of_the_service_does_not_hold_back_the_diff_and_spends_no_attempts(
    database_url: str, tmp_path: Path, service: CashflowServer
) -> None:
    container = node(database_url, tmp_path, service, slice_size=200)
    container.start_workers()
    try:
        service.go_down("refuse")
        first = upload_tape(container, tmp_path, 2000, seed=1)
        # The diff finishes while every assessment waits for the service.
        deadline = time.monotonic() + 60
        while (status := container.intake.batch_status(first))["slices_done"] != status["slices"]:
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        time.sleep(1.0)  # long enough for the breaker to open
        assert container.runner.breaker_states()["intake.assess"] == "open"
        attempts_when_open = _assess_attempts(container)
        # A batch uploaded during the outage is diffed at full rate too.
        second = upload_tape(container, tmp_path, 2000, seed=2)
        started = time.monotonic()
        while (status := container.intake.batch_status(second))["slices_done"] != status["slices"]:
            assert time.monotonic() - started < 30, status
            time.sleep(0.02)
        assert container.intake.batch_status(first)["status"] == "processing"
        assert _assess_attempts(container) - attempts_when_open <= 2  # at most the breaker's probes
        service.come_up()
        wait_for(container, first, timeout=120)
        wait_for(container, second, timeout=120)
    finally:
        container.close()
    # The second tape carries the same 2000 loans, changed: two assessed versions of each.
    assert assessments(container) == (4000, 2000)


def _assess_attempts(container: Container) -> int:
    t = pipeline_items.c
    with container.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.coalesce(func.sum(t.attempts), 0)).where(t.stage == "intake.assess")
            ).scalar_one()
        )


def test_a_loan_the_service_refuses_fails_alone_with_the_service_message(
    database_url: str, tmp_path: Path, service: CashflowServer
) -> None:
    container = node(database_url, tmp_path, service)

    def doc(loan_id: str, **changes: object) -> bytes:
        base: dict[str, object] = {
            "loan_id": loan_id,
            "status": "active",
            "currency": "EUR",
            "principal": "1200.00",
            "outstanding_principal": "1000.00",
            "interest_rate": "0.09",
            "term_months": 12,
            "schedule_type": "annuity",
            "issue_date": "2026-05-03",
            "next_payment_date": "2026-12-03",
            "borrower": {"country": "ES", "age": 29, "income_monthly": "2700", "credit_score": 720},
        }
        base.update(changes)
        return bson.encode({k: v for k, v in base.items() if v is not None})

    tape = doc("L1") + doc("L2", next_payment_date=None) + doc("L3")
    batch = container.intake.receive("acme", TapeFormat.BSON, [tape]).batch_id
    container.runner.run_until_idle()
    status = container.intake.batch_status(batch)
    container.close()
    assert status["status"] == "completed"
    assert status["counts"]["assessed"] == 2 and status["counts"]["not_assessed"] == 1  # type: ignore[index]
    [error] = container.intake.batch_errors(batch)
    assert (error["loan_id"], error["field"], error["document"]) == ("L2", "next_payment_date", 1)
    assert "next payment date" in error["reason"]
    assert service.counters["rejected"] == 1  # the refusal came from the service
