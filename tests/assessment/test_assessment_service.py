"""The stand-alone cash-flow service and its HTTP client, over real loopback HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from assessment_loans import make_loan

from tranche.assessment.errors import LoanError, RetryableServiceError, TerminalServiceError
from tranche.assessment.projection import Projection, project_many
from tranche.assessment.projectors import BuiltinCashflowProjector, make_cashflow_projector
from tranche.assessment.protocol import decode_loan, encode_loan
from tranche.assessment.remote import HttpCashflowClient, parse_retry_after
from tranche.assessment.service import CashflowServer, Faults

SLICE = [make_loan(f"L{i}", outstanding=100_000 + i, term=12 + i % 48) for i in range(250)]


@pytest.fixture(scope="module")
def server() -> Iterator[CashflowServer]:
    with CashflowServer(seed=7) as running:
        yield running


@pytest.fixture
def service(server: CashflowServer) -> Iterator[CashflowServer]:
    """The module's server, healthy and without faults at the start and end of each test."""
    server.set_faults(fail_rate=0.0, statuses=[503], latency_ms=0, retry_after=1.0)
    server.come_up()
    yield server
    server.set_faults(fail_rate=0.0, statuses=[503], latency_ms=0, retry_after=1.0)
    server.come_up()


@pytest.fixture
def client(service: CashflowServer) -> Iterator[HttpCashflowClient]:
    with HttpCashflowClient(service.url, timeout=2.0, connect_timeout=0.5, batch_size=100) as http:
        yield http


def test_the_service_projects_a_slice_exactly_as_the_built_in_projection(client: HttpCashflowClient) -> None:
    assert client.project_many(SLICE) == BuiltinCashflowProjector().project_many(SLICE)


def test_one_bad_loan_is_an_error_with_the_services_message_and_its_neighbours_are_projected(
    client: HttpCashflowClient,
) -> None:
    slice_ = [make_loan("A"), make_loan("BAD", rate="-0.5"), make_loan("B")]
    results = client.project_many(slice_)
    assert [type(r) for r in results] == [Projection, LoanError, Projection]
    error = results[1]
    assert isinstance(error, LoanError)
    assert (error.loan_id, error.field) == ("BAD", "interest_rate")
    assert "interest rate -0.5" in error.message


def test_a_loan_that_breaks_the_protocol_is_refused_alone(service: CashflowServer) -> None:
    good = encode_loan(make_loan("A"))
    bad = {**encode_loan(make_loan("X")), "interest_rate": 0.12}  # a JSON number is refused
    answer = httpx.post(f"{service.url}/v1/projections", json={"loans": [good, bad]}).json()
    assert [r["status"] for r in answer["results"]] == [200, 400]
    assert answer["results"][1]["field"] == "interest_rate"


def test_the_single_loan_endpoint_answers_400_with_a_message_naming_the_field(
    service: CashflowServer,
) -> None:
    response = httpx.post(f"{service.url}/v1/projection", json=encode_loan(make_loan(next_payment=None)))
    assert response.status_code == 400
    assert response.json()["field"] == "next_payment_date"
    ok = httpx.post(f"{service.url}/v1/projection", json=encode_loan(make_loan()))
    assert ok.status_code == 200 and sum(ok.json()["principal"]) == 1_000_000


def test_a_call_that_is_not_a_batch_is_a_terminal_error(service: CashflowServer) -> None:
    response = httpx.post(f"{service.url}/v1/projections", json={"loan": []})
    assert response.status_code == 400

    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"message": "no such thing"})

    http = HttpCashflowClient("http://unused", transport=httpx.MockTransport(broken))
    with http, pytest.raises(TerminalServiceError, match="no such thing") as caught:
        http.project_many(SLICE[:1])
    assert caught.value.status == 422


def test_a_429_is_retryable_and_carries_the_services_retry_after(
    service: CashflowServer, client: HttpCashflowClient
) -> None:
    service.set_faults(fail_rate=1.0, statuses=[429], retry_after=0.25)
    with pytest.raises(RetryableServiceError) as caught:
        client.project_many(SLICE[:3])
    assert (caught.value.status, caught.value.retry_after) == (429, 0.25)


def test_a_503_is_retryable_without_a_retry_after(
    service: CashflowServer, client: HttpCashflowClient
) -> None:
    service.set_faults(fail_rate=1.0, statuses=[503])
    with pytest.raises(RetryableServiceError) as caught:
        client.project_many(SLICE[:3])
    assert (caught.value.status, caught.value.retry_after) == (503, None)


def test_about_the_configured_share_of_calls_fail_with_the_configured_statuses(
    service: CashflowServer, client: HttpCashflowClient
) -> None:
    service.set_faults(fail_rate=0.3, statuses=[429, 503])
    outcomes: list[int] = []
    for _ in range(300):
        try:
            client.project_many(SLICE[:1])
            outcomes.append(200)
        except RetryableServiceError as exc:
            assert exc.status is not None
            outcomes.append(exc.status)
    failed = [s for s in outcomes if s != 200]
    assert 45 <= len(failed) <= 135  # 90 expected; far outside only if the rate is not applied
    assert set(failed) == {429, 503}


def test_latency_delays_every_call(service: CashflowServer, client: HttpCashflowClient) -> None:
    service.set_faults(latency_ms=150)
    started = time.perf_counter()
    client.project_many(SLICE[:1])
    assert time.perf_counter() - started >= 0.15


def test_a_slow_service_is_a_retryable_timeout(service: CashflowServer) -> None:
    service.set_faults(latency_ms=500)
    with (
        HttpCashflowClient(service.url, timeout=0.1) as impatient,
        pytest.raises(RetryableServiceError, match="timed out"),
    ):
        impatient.project_many(SLICE[:1])


def test_a_service_down_with_503_answers_every_call_until_it_comes_back(
    service: CashflowServer, client: HttpCashflowClient
) -> None:
    service.go_down("503")
    for _ in range(3):
        with pytest.raises(RetryableServiceError) as caught:
            client.project_many(SLICE[:1])
        assert caught.value.status == 503
    service.come_up()
    assert len(client.project_many(SLICE[:1])) == 1


def test_a_service_that_refuses_connections_is_retryable_and_serves_again_on_the_same_port(
    service: CashflowServer, client: HttpCashflowClient
) -> None:
    client.project_many(SLICE[:1])  # a kept-alive connection must not survive the outage either
    service.go_down("refuse")
    with socket.socket() as probe:
        assert probe.connect_ex((service.host, service.port)) != 0
    with pytest.raises(RetryableServiceError, match="unreachable"):
        client.project_many(SLICE[:1])
    service.come_up()
    assert len(client.project_many(SLICE[:1])) == 1


def test_the_admin_endpoints_take_the_service_down_for_a_while_and_change_its_faults(
    service: CashflowServer, client: HttpCashflowClient
) -> None:
    assert httpx.post(f"{service.url}/admin/down", json={"mode": "refuse", "seconds": 0.4}).status_code == 200
    time.sleep(0.2)
    with pytest.raises(RetryableServiceError):
        client.project_many(SLICE[:1])
    time.sleep(0.5)
    assert len(client.project_many(SLICE[:1])) == 1
    changed = httpx.post(f"{service.url}/admin/faults", json={"fail_rate": 1.0, "statuses": [502]})
    assert changed.json()["fail_rate"] == 1.0
    with pytest.raises(RetryableServiceError):
        client.project_many(SLICE[:1])
    assert httpx.post(f"{service.url}/admin/faults", json={"fail_rate": 2}).status_code == 400
    state = httpx.get(f"{service.url}/admin/state").json()
    assert state["faults"]["statuses"] == [502] and state["injected"] >= 1


def test_an_admin_port_brings_a_refusing_service_back() -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        admin_port = spare.getsockname()[1]
    with CashflowServer(admin_port=admin_port) as server:
        admin = f"http://127.0.0.1:{admin_port}"
        httpx.post(f"{admin}/admin/down", json={"mode": "refuse"})
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and httpx.get(f"{admin}/health").json()["status"] != "down":
            time.sleep(0.02)
        time.sleep(0.2)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/health")
        httpx.post(f"{admin}/admin/up")
        assert httpx.get(f"{server.url}/health").json() == {"status": "up"}


def test_slices_larger_than_a_batch_go_in_several_calls_and_keep_their_order(
    service: CashflowServer, client: HttpCashflowClient
) -> None:
    before = service.counters["calls"]
    results = client.project_many(SLICE)
    assert service.counters["calls"] - before == 3  # 250 loans in batches of 100
    assert [r.loan_id for r in results] == [loan.loan_id for loan in SLICE]


def test_one_client_serves_many_threads(client: HttpCashflowClient) -> None:
    expected = project_many(SLICE)
    answers: list[bool] = []

    def work() -> None:
        answers.append(client.project_many(SLICE) == expected)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [True] * 4


def test_an_answer_that_breaks_the_protocol_is_terminal() -> None:
    answers = iter(
        [
            httpx.Response(200, json={"results": []}),
            httpx.Response(200, text="<html>"),
            httpx.Response(200, json={"results": [{"status": 200, "projection": {"principal": "x"}}]}),
        ]
    )
    with HttpCashflowClient("http://unused", transport=httpx.MockTransport(lambda _: next(answers))) as http:
        for _ in range(3):
            with pytest.raises(TerminalServiceError):
                http.project_many(SLICE[:1])


def test_retry_after_is_read_as_seconds_or_as_a_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_the_factory_picks_the_service_only_when_a_url_is_set() -> None:
    assert isinstance(make_cashflow_projector(None), BuiltinCashflowProjector)
    assert isinstance(make_cashflow_projector(""), BuiltinCashflowProjector)
    remote = make_cashflow_projector("http://127.0.0.1:1", timeout=1.0)
    assert isinstance(remote, HttpCashflowClient)
    remote.close()


def test_the_wire_format_round_trips_a_loans_terms() -> None:
    loan = make_loan("L1", rate="0.0725")
    terms = decode_loan(encode_loan(loan))
    assert not isinstance(terms, LoanError)
    assert project_many([terms]) == project_many([loan])


def test_faults_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError):
        Faults(fail_rate=1.5).check()
    with pytest.raises(ValueError):
        Faults(statuses=[200]).check()


def test_admin_requests_that_are_not_json_objects_are_refused(service: CashflowServer) -> None:
    for path in ("/admin/faults", "/admin/down"):
        assert httpx.post(f"{service.url}{path}", content=b"[1, 2]").status_code == 400
        assert httpx.post(f"{service.url}{path}", content=b"{oops").status_code == 400
    assert httpx.post(f"{service.url}/admin/faults", json={"colour": "red"}).status_code == 400
    assert httpx.get(f"{service.url}/health").json() == {"status": "up"}
