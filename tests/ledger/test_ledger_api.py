"""The ledger's HTTP endpoints (FastAPI's test client), on both databases."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tranche.bootstrap import Container
from tranche.ledger.service import LedgerService
from tranche.matching import Bid, LoanFunded, OfferMatched


@pytest.fixture
def client(app_client: TestClient) -> TestClient:
    return app_client


def test_a_deposit_is_credited_once_per_idempotency_key(client: TestClient) -> None:
    first = client.post(
        "/v1/investors/ann/deposits",
        json={"amount": "100.00", "currency": "EUR"},
        headers={"Idempotency-Key": "k1"},
    )
    again = client.post(
        "/v1/investors/ann/deposits", json={"amount": "100.00", "currency": "EUR", "key": "k1"}
    )
    assert first.status_code == 201 and again.status_code == 201
    assert again.json()["available"] == "100.00"
    clash = client.post("/v1/investors/ann/deposits", json={"amount": "5.00", "currency": "EUR", "key": "k1"})
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "transfer_exists"


def test_a_withdrawal_above_available_cash_is_refused_naming_the_account(client: TestClient) -> None:
    client.post("/v1/investors/ann/deposits", json={"amount": "50.00", "currency": "EUR", "key": "d"})
    refused = client.post(
        "/v1/investors/ann/withdrawals", json={"amount": "50.01", "currency": "EUR", "key": "w"}
    )
    assert refused.status_code == 409
    assert refused.json()["error"] == {
        "code": "overdraft",
        "message": refused.json()["error"]["message"],
        "record": "inv:ann:cash:EUR",
        "field": "debits",
    }
    done = client.post(
        "/v1/investors/ann/withdrawals", json={"amount": "20.00", "currency": "EUR", "key": "w"}
    )
    assert done.status_code == 201 and done.json()["balance"] == "30.00"


def test_deposits_need_an_idempotency_key_and_a_valid_amount(client: TestClient) -> None:
    assert (
        client.post("/v1/investors/ann/deposits", json={"amount": "1.00", "currency": "EUR"}).status_code
        == 422
    )
    bad = client.post("/v1/investors/ann/deposits", json={"amount": "1.001", "currency": "EUR", "key": "x"})
    assert bad.status_code == 422


def test_the_statement_streams_opening_movements_and_closing(
    client: TestClient, container: Container
) -> None:
    for n in range(3):
        client.post("/v1/investors/ann/deposits", json={"amount": "10.00", "currency": "EUR", "key": f"d{n}"})
        container.clock.advance(timedelta(days=1))
    client.post("/v1/investors/ann/withdrawals", json={"amount": "5.00", "currency": "EUR", "key": "w"})
    response = client.get(
        "/v1/investors/ann/statement", params={"currency": "EUR", "from": "2026-03-02T00:00:00Z"}
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[0] == {"type": "opening", "investor_id": "ann", "currency": "EUR", "balance": "10.00"}
    assert [(m["code"], m["amount"], m["balance"]) for m in lines[1:-1]] == [
        ("deposit", "10.00", "20.00"),
        ("deposit", "10.00", "30.00"),
        ("withdrawal", "-5.00", "25.00"),
    ]
    assert lines[-1] == {"type": "closing", "balance": "25.00"}


def test_holdings_and_return_are_served(client: TestClient, container: Container, engine: Engine) -> None:
    client.post("/v1/investors/ann/deposits", json={"amount": "100.00", "currency": "EUR", "key": "d"})
    service = LedgerService(engine, container.clock)
    bid = Bid("b1", "buy", "pf", "ann", 6_000, Decimal("0.1"), Decimal("0.1"), Decimal(0))
    service.on_offer_matched(OfferMatched("m", "len", "L1", 1, "EUR", False, (bid,)))
    service.on_loan_funded(LoanFunded("len", "L1", 1, "EUR", ("b1",)))
    [holding] = client.get("/v1/investors/ann/holdings").json()
    assert (holding["loan_id"], holding["held_principal"], holding["invested"]) == ("L1", "60.00", "60.00")
    container.clock.advance(timedelta(days=365))
    body = client.get("/v1/investors/ann/return", params={"currency": "EUR"}).json()
    assert Decimal(body["xirr"]) == 0
    days = client.get("/v1/lenders/len/settlement", params={"currency": "EUR"}).json()
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
