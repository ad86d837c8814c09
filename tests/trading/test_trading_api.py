"""The investors' portfolio endpoints over HTTP (FastAPI's test client), on both databases."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tranche.api.app import create_app
from tranche.bootstrap import Container

EXAMPLE: dict[str, Any] = {
    "currency": "EUR",
    "total": "100000.00",
    "max_per_loan": "200.00",
    "min_ticket": "10.00",
    "buckets": [
        {
            "name": "low risk, low return",
            "weight": "75",
            "criteria": {
                "countries": ["ES"],
                "borrower_age": {"min": 28, "max": 35},
                "credit_score": {"min": 700},
                "min_monthly_income": "2500",
            },
        },
        {"name": "high risk, high return", "weight": "25", "criteria": {"credit_score": {"max": 599}}},
    ],
}


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    """The API with its messaging running (the in-process bus, the outbox relay and the market role), and a
    registered investor."""
    with TestClient(create_app(container)) as client:
        client.put("/v1/investors/inv_1", json={"name": "Investor One"})
        yield client


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """What ``check`` returns once it is truthy: the market applies changes a moment after they are stored."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def test_the_example_portfolio_is_created_as_written_and_issues_its_first_tranche(client: TestClient) -> None:
    client.post("/v1/investors/inv_1/deposits", json={"amount": "100000.00", "currency": "EUR", "key": "d1"})
    created = client.post("/v1/investors/inv_1/portfolios", json=EXAMPLE)
    assert created.status_code == 201, created.text
    body = created.json()
    safe = body["buckets"][0]["criteria"]
    assert safe["countries"] == ["ES"]
    assert safe["borrower_age"] == {"min": 28, "max": 35}
    assert safe["min_monthly_income"] == "2500.00"
    body = eventually(
        lambda: (view := client.get(f"/v1/portfolios/{body['portfolio_id']}").json())["cycle"] == 1 and view
    )
    composition = body["composition"]
    assert composition["wanted"] == "10000.00"  # the first tranche: 10 % of 100,000
    assert [b["target_percent"] for b in composition["buckets"]] == ["75", "25"]
    offers = client.get(f"/v1/portfolios/{body['portfolio_id']}/buy-offers").json()["buy_offers"]
    assert sorted(o["amount"] for o in offers) == ["2500.00", "7500.00"]
    assert {o["cycle"] for o in offers} == {1}
    listed = client.get("/v1/investors/inv_1/portfolios").json()["portfolios"]
    assert [p["portfolio_id"] for p in listed] == [body["portfolio_id"]]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"currency": "ZZZ"}, "currency"),
        ({"total": "10.001"}, "total"),
        ({"buckets": [{**EXAMPLE["buckets"][0], "weight": "70"}, EXAMPLE["buckets"][1]]}, "buckets.weight"),
        (
            {
                "buckets": [
                    {"name": "x", "weight": "100", "criteria": {"credit_score": {"min": 700, "max": 600}}}
                ]
            },
            "buckets[0].criteria.credit_score",
        ),
    ],
)
def test_an_invalid_portfolio_is_rejected_with_422_naming_the_field(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/investors/inv_1/portfolios", json={**EXAMPLE, **change})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_pausing_withdraws_the_open_buy_offers_and_closing_freezes_the_portfolio(client: TestClient) -> None:
    client.post("/v1/investors/inv_1/deposits", json={"amount": "100000.00", "currency": "EUR", "key": "d1"})
    portfolio_id = client.post("/v1/investors/inv_1/portfolios", json=EXAMPLE).json()["portfolio_id"]

    def offers(status: str) -> list[dict[str, Any]]:
        found = client.get(f"/v1/portfolios/{portfolio_id}/buy-offers").json()["buy_offers"]
        return [o for o in found if o["status"] == status]

    assert len(eventually(lambda: offers("open"))) == 2
    paused = client.post(f"/v1/portfolios/{portfolio_id}/pause").json()
    assert (paused["status"], paused["state"]) == ("paused", "paused")
    assert len(eventually(lambda: offers("withdrawn"))) == 2 and offers("open") == []
    assert client.get(f"/v1/portfolios/{portfolio_id}").json()["composition"]["wanted"] == "0.00"
    resumed = client.post(f"/v1/portfolios/{portfolio_id}/resume").json()
    assert resumed["status"] == "active"
    assert eventually(lambda: client.get(f"/v1/portfolios/{portfolio_id}").json()["cycle"] == 2)
    updated = client.put(f"/v1/portfolios/{portfolio_id}", json={**EXAMPLE, "total": "50000.00"}).json()
    assert (updated["version"], updated["total"]) == (2, "50000.00")
    closed = client.post(f"/v1/portfolios/{portfolio_id}/close")
    assert closed.json()["status"] == "closed"
    again = client.put(f"/v1/portfolios/{portfolio_id}", json=EXAMPLE)
    assert again.status_code == 409
    assert again.json()["error"]["record"] == portfolio_id


def test_an_unknown_portfolio_is_404(client: TestClient) -> None:
    assert client.get("/v1/portfolios/pf_nope").status_code == 404


def test_a_portfolio_for_an_unregistered_investor_is_refused(client: TestClient) -> None:
    response = client.post("/v1/investors/nobody/portfolios", json=EXAMPLE)
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_investor"


@pytest.mark.parametrize("total", ["1e30", "99999999999999999999.99"])
def test_a_total_too_large_for_64_bit_minor_units_is_refused_naming_the_field(
    client: TestClient, total: str
) -> None:
    response = client.post("/v1/investors/inv_1/portfolios", json={**EXAMPLE, "total": total})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "total"


def test_a_lowercase_currency_is_read_as_its_code(client: TestClient) -> None:
    response = client.post("/v1/investors/inv_1/portfolios", json={**EXAMPLE, "currency": "eur"})
    assert response.status_code == 201 and response.json()["currency"] == "EUR"


def test_a_portfolio_without_cash_waits_for_it_and_says_so(client: TestClient) -> None:
    portfolio_id = client.post("/v1/investors/inv_1/portfolios", json=EXAMPLE).json()["portfolio_id"]
    assert client.get(f"/v1/portfolios/{portfolio_id}").json()["state"] == "insufficient_cash"
