"""``tranche cashflow-service`` as a separate process, over real loopback HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from assessment_loans import make_loan
from click.testing import CliRunner

from tranche.assessment.errors import RetryableServiceError
from tranche.assessment.remote import HttpCashflowClient
from tranche.cli import main

TRANCHE = Path(sys.executable).with_name("tranche")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.skipif(not TRANCHE.exists(), reason="the tranche command is not installed in this environment")
def test_the_command_serves_with_the_requested_faults_and_stops_on_sigint() -> None:
    port, admin_port = free_port(), free_port()
    faults = ["--fail-rate", "1", "--status", "429", "--retry-after", "2", "--latency-ms", "10"]
    process = subprocess.Popen(
        [str(TRANCHE), "cashflow-service", "--port", str(port), "--admin-port", str(admin_port), *faults],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        assert f"127.0.0.1:{port}" in process.stdout.readline()
        with HttpCashflowClient(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(RetryableServiceError) as caught:
                client.project_many([make_loan()])
            assert (caught.value.status, caught.value.retry_after) == (429, 2.0)
            httpx.post(f"http://127.0.0.1:{admin_port}/admin/faults", json={"fail_rate": 0})
            assert client.project_many([make_loan()])[0].total_principal == 1_000_000
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    time.sleep(0.05)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health")


def test_a_status_that_is_not_a_number_is_refused() -> None:
    result = CliRunner().invoke(main, ["cashflow-service", "--status", "teapot"])
    assert result.exit_code == 2
    assert "teapot" in result.output


def test_a_fail_rate_above_one_is_refused() -> None:
    result = CliRunner().invoke(main, ["cashflow-service", "--fail-rate", "1.5"])
    assert result.exit_code == 2
    assert "fail_rate" in result.output
