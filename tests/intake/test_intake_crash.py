"""A worker killed (SIGKILL) at random points of a batch: the batch completes, no loan version and no
assessment is lost or doubled. With the built-in projection the diff assesses what it stores; with an
external cash-flow service the slices go on to the assess stage, which is killed in too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tranche.assessment.service import CashflowServer, Faults
from tranche.assessment.tables import loan_assessments
from tranche.bootstrap import bootstrap
from tranche.config import Settings
from tranche.crm.lenders import register_lender
from tranche.intake.tables import loan_versions, slice_results
from tranche.intake.tape import TapeFormat
from tranche.intake.tapegen import first_tape, write_tape

LOANS = 15000


def _worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tranche.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture(params=["built-in", "service"])
def cashflow_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """No URL (the built-in projection), or the stand-alone service's over loopback HTTP."""
    if request.param == "built-in":
        yield ""
        return
    with CashflowServer(Faults(), seed=5) as server:
        yield server.url


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_and_doubles_nothing(
    database_url: str, cashflow_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "TRANCHE_DATABASE_URL": database_url,
        "TRANCHE_ARCHIVE_DIR": str(tmp_path / "archive"),
        "TRANCHE_SLICE_SIZE": "100",
        "TRANCHE_OPS_PORT": "0",  # no ops server: other workers (and test runs) on this host may hold the port
        "TRANCHE_LOG_LEVEL": "WARNING",
        "TRANCHE_STAGE_INTAKE_DIFF_LEASE_SECONDS": "1",
        "TRANCHE_STAGE_INTAKE_READ_LEASE_SECONDS": "1",
        "TRANCHE_STAGE_INTAKE_ASSESS_LEASE_SECONDS": "1",
        "TRANCHE_CASHFLOW_URL": cashflow_url,
    }
    settings = replace(Settings.from_env(env), log_level="WARNING")
    container = bootstrap(settings)
    with container.engine.begin() as conn:
        register_lender(conn, "acme", "Acme", at=container.clock.now())
    tape = tmp_path / "tape.bson"
    write_tape(first_tape(LOANS, "acme", 9, date(2026, 11, 23)), tape)
    batch_id = container.intake.receive("acme", TapeFormat.BSON, [tape.read_bytes()]).batch_id

    def slices_done() -> int:
        with container.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(slice_results)).scalar_one())

    kills = 0
    deadline = time.monotonic() + 120
    while kills < 3 and time.monotonic() < deadline:
        before = slices_done()
        worker = _worker(env)
        # Let it make some progress, then kill it without warning, wherever it is.
        while slices_done() < before + 3 and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.01 * kills)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        kills += 1
    assert slices_done() < LOANS // 100, (
        "the workers finished before they could be killed; the test proves nothing"
    )

    survivor = _worker(env)
    try:
        while container.intake.batch_status(batch_id)["status"] != "completed":
            assert time.monotonic() < deadline + 60, container.intake.batch_status(batch_id)
            assert survivor.poll() is None, survivor.stderr.read() if survivor.stderr else ""
            time.sleep(0.1)
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(30)

    status = container.intake.batch_status(batch_id)
    assert status["counts"]["read"] == LOANS and status["counts"]["new"] == LOANS
    assert status["counts"]["assessed"] == LOANS
    with container.engine.connect() as conn:
        versions = conn.execute(
            select(func.count(), func.count(func.distinct(loan_versions.c.loan_id)))
        ).one()
        assessed = conn.execute(
            select(func.count(), func.count(func.distinct(loan_assessments.c.loan_id)))
        ).one()
    assert tuple(versions) == (LOANS, LOANS)
    assert tuple(assessed) == (LOANS, LOANS)
    container.close()
