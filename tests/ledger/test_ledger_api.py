"""The ledger's HTTP endpoints (FastAPI's test client), on both databases: what they answer, and every bad input
a clear 4xx that changes nothing."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from ledger_examples import bid, matched

from tranche.bootstrap import Container
from tranche.crm import register_lender
from tranche.ledger import chart
from tranche.matching import LoanFunded


@pytest.fixture
def client(app_client: TestClient, container: Container) -> TestClient:
    for investor in ("ann", "ben"):
        assert app_client.put(f"/v1/investors/{investor}", json={"name": investor.title()}).status_code == 200
    with container.engine.begin() as conn:
        register_lender(conn, "lender1", "Lender One", at=container.clock.now())
    return app_client


def deposit(client: TestClient, amount: str, key: str, investor: str = "ann", **body: Any) -> Any:
    return client.post(
        f"/v1/investors/{investor}/deposits", json={"amount": amount, "currency": "EUR", "key": key, **body}
    )


def ledger_rows(container: Container) -> tuple[int, int]:
    with container.engine.connect() as conn:
        accounts = conn.exec_driver_sql("SELECT COUNT(*) FROM ledger_accounts").scalar_one()
        transfers = conn.exec_driver_sql("SELECT COUNT(*) FROM ledger_transfers").scalar_one()
    return int(accounts), int(transfers)


def test_a_deposit_is_credited_once_per_idempotency_key(client: TestClient) -> None:
    first = client.post(
        "/v1/investors/ann/deposits",
        json={"amount": "100.00", "currency": "EUR"},
        headers={"Idempotency-Key": "k1"},
    )
    again = deposit(client, "100.00", "k1")
    assert first.status_code == 201 and again.status_code == 201
    assert again.json()["available"] == "100.00"
    clash = deposit(client, "5.00", "k1")
    assert clash.status_code == 409
    assert clash.json()["error"] | {"message": ""} == {
        "code": "idempotency_key_reused",
        "message": "",
        "record": "k1",
        "field": "amount",
    }


def test_a_withdrawal_above_available_cash_is_refused_naming_the_investor_and_the_amount(
    client: TestClient,
) -> None:
    deposit(client, "50.00", "d")
    refused = client.post(
        "/v1/investors/ann/withdrawals", json={"amount": "50.01", "currency": "EUR", "key": "w"}
    )
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert (error["code"], error["record"], error["field"]) == ("insufficient_cash", "ann", "amount")
    assert "50.00 EUR available" in error["message"] and "inv:" not in error["message"]
    done = client.post(
        "/v1/investors/ann/withdrawals", json={"amount": "20.00", "currency": "EUR", "key": "w"}
    )
    assert done.status_code == 201 and done.json()["balance"] == "30.00"


def test_deposits_need_an_idempotency_key_and_a_valid_amount(client: TestClient) -> None:
    assert (
        client.post("/v1/investors/ann/deposits", json={"amount": "1.00", "currency": "EUR"}).status_code
        == 422
    )
    assert deposit(client, "1.001", "x").status_code == 422
    assert deposit(client, "0", "x").status_code == 422


@pytest.mark.parametrize("amount", ["1e30", "99999999999999999999.99", "92233720368547758.08", "1e999999999"])
def test_an_amount_too_large_for_64_bit_minor_units_is_a_422_that_changes_nothing(
    client: TestClient, container: Container, amount: str
) -> None:
    response = deposit(client, amount, "big")
    assert response.status_code == 422
    assert (response.json()["error"]["code"], response.json()["error"]["field"]) == (
        "amount_too_large",
        "amount",
    )
    assert ledger_rows(container) == (0, 0)


def test_a_deposit_that_would_overflow_a_running_total_is_a_422_that_changes_nothing(
    client: TestClient, container: Container
) -> None:
    assert deposit(client, "92233720368547758.07", "max").status_code == 201
    before = ledger_rows(container)
    response = deposit(client, "0.01", "one-more", investor="ben")
    assert response.status_code == 422 and response.json()["error"]["code"] == "amount_too_large"
    assert "world" not in response.json()["error"]["message"]
    assert ledger_rows(container) == before


def test_the_header_and_the_body_key_must_agree(client: TestClient, container: Container) -> None:
    response = client.post(
        "/v1/investors/ann/deposits",
        json={"amount": "1.00", "currency": "EUR", "key": "body"},
        headers={"Idempotency-Key": "header"},
    )
    assert response.status_code == 422 and response.json()["error"]["field"] == "key"
    assert ledger_rows(container) == (0, 0)
    same = client.post(
        "/v1/investors/ann/deposits",
        json={"amount": "1.00", "currency": "EUR", "key": "k"},
        headers={"Idempotency-Key": "k"},
    )
    assert same.status_code == 201


def test_a_refused_withdrawal_creates_no_account(client: TestClient, container: Container) -> None:
    response = client.post(
        "/v1/investors/ann/withdrawals", json={"amount": "1.00", "currency": "EUR", "key": "w"}
    )
    assert response.status_code == 409
    assert ledger_rows(container) == (0, 0)


def test_every_route_answers_404_for_an_investor_or_lender_that_is_not_registered(
    client: TestClient, container: Container
) -> None:
    for method, path, body in [
        ("post", "/v1/investors/nobody/deposits", {"amount": "1.00", "currency": "EUR", "key": "k"}),
        ("post", "/v1/investors/nobody/withdrawals", {"amount": "1.00", "currency": "EUR", "key": "k"}),
        ("get", "/v1/investors/nobody/statement?currency=EUR", None),
        ("get", "/v1/investors/nobody/holdings", None),
        ("get", "/v1/investors/nobody/return?currency=EUR", None),
        ("get", "/v1/lenders/nobody/settlement?currency=EUR", None),
    ]:
        response = client.request(method, path, json=body)
        assert response.status_code == 404, path
        assert response.json()["error"]["record"] == "nobody", path
    assert ledger_rows(container) == (0, 0)


def test_a_currency_is_one_rule_everywhere_any_case_and_iso_4217(client: TestClient) -> None:
    assert deposit(client, "10.00", "d", currency="eur").json()["currency"] == "EUR"
    assert client.get("/v1/investors/ann/return", params={"currency": "eur"}).json()["currency"] == "EUR"
    assert client.get("/v1/lenders/lender1/settlement", params={"currency": "Eur"}).status_code == 200
    for path in (
        "/v1/investors/ann/statement",
        "/v1/investors/ann/return",
        "/v1/lenders/lender1/settlement",
    ):
        for bad in ("XYZ", "XAU", "EURO"):
            response = client.get(path, params={"currency": bad})
            assert response.status_code == 422, (path, bad)
            assert response.json()["error"]["field"] == "currency"
    assert deposit(client, "1.00", "x", currency="XYZ").status_code == 422


def test_the_statement_streams_opening_movements_and_closing(
    client: TestClient, container: Container
) -> None:
    for n in range(3):
        deposit(client, "10.00", f"d{n}")
        container.clock.advance(timedelta(days=1))
    client.post("/v1/investors/ann/withdrawals", json={"amount": "5.00", "currency": "EUR", "key": "w"})
    with client:  # the bus started: the statement comes from the ledger role
        response = client.get(
            "/v1/investors/ann/statement", params={"currency": "eur", "from": "2026-03-02T00:00:00Z"}
        )
        empty = client.get("/v1/investors/ben/statement", params={"currency": "PLN"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[0] == {"type": "opening", "investor_id": "ann", "currency": "EUR", "balance": "10.00"}
    assert [(m["code"], m["amount"], m["balance"]) for m in lines[1:-1]] == [
        ("deposit", "10.00", "20.00"),
        ("deposit", "10.00", "30.00"),
        ("withdrawal", "-5.00", "25.00"),
    ]
    assert lines[-1] == {"type": "closing", "balance": "25.00"}
    assert [json.loads(line)["type"] for line in empty.text.splitlines()] == ["opening", "closing"]


def test_a_statement_without_a_ledger_role_to_answer_is_a_503(client: TestClient) -> None:
    response = client.get("/v1/investors/ann/statement", params={"currency": "EUR"})  # the bus is not started
    assert response.status_code == 503


def test_holdings_and_return_are_served(client: TestClient, container: Container) -> None:
    deposit(client, "100.00", "d")
    ledger = container.ledger
    ledger.reserve([matched(bid("b1", "ann", 6_000))])
    ledger.fund(LoanFunded("lender1", "L1", 1, "EUR", ("b1",)))
    [holding] = client.get("/v1/investors/ann/holdings").json()
    assert (holding["loan_id"], holding["held_principal"], holding["invested"]) == ("L1", "60.00", "60.00")
    container.clock.advance(timedelta(days=365))
    body = client.get("/v1/investors/ann/return", params={"currency": "EUR"}).json()
    assert Decimal(body["xirr"]) == 0
    days = client.get("/v1/lenders/lender1/settlement", params={"currency": "EUR"}).json()
    assert days == [
        {
            "day": "2026-03-01",
            "funded": "60.00",
            "principal_paid": "0.00",
            "interest_paid": "0.00",
            "margin": "0.00",
            "payouts": "0.00",
            "received": "0.00",
            "net": "60.00",
            "closing": "60.00",
        }
    ]
    assert ledger.store.accounts([chart.investor_cash("ann", "EUR").id])


def test_the_routes_declare_the_errors_they_answer(client: TestClient) -> None:
    paths = client.get("/v1/openapi.json").json()["paths"]
    assert {"404", "409", "422"} <= set(paths["/v1/investors/{investor_id}/deposits"]["post"]["responses"])
    assert {"404", "422", "503"} <= set(paths["/v1/investors/{investor_id}/statement"]["get"]["responses"])
    assert "404" in paths["/v1/investors/{investor_id}/holdings"]["get"]["responses"]
    assert {"404", "422"} <= set(paths["/v1/lenders/{lender_id}/settlement"]["get"]["responses"])
