"""The consistent market over HTTP on a real node (API, workers, in-process bus), on SQLite and PostgreSQL: the
issue's investor short of cash, with the market's invariants checked after every step."""

from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import bson
import httpx
from bson.decimal128 import Decimal128

BSON = {"content-type": "application/bson"}
ANY = {"name": "any loan", "weight": "100", "criteria": {}}


def loan(loan_id: str, amount: str, *, aon: bool = False) -> dict[str, Any]:
    return {
        "loan_id": loan_id,
        "status": "active",
        "currency": "EUR",
        "principal": Decimal128(amount),
        "outstanding_principal": Decimal128(amount),
        "interest_rate": Decimal128("0.10"),
        "term_months": 12,
        "schedule_type": "annuity",
        "issue_date": datetime(2026, 11, 1),
        "next_payment_date": datetime(2026, 12, 1),
        "all_or_nothing": aon,
        "borrower": {
            "country": "ES",
            "age": 30,
            "income_monthly": Decimal128("3000.00"),
            "credit_score": 720,
        },
    }


def ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def wait_for(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def quiet(api: httpx.Client, portfolios: list[str]) -> dict[str, Any]:
    """Wait until the market stands still: nothing waits for the ledger and no portfolio moves, then return the
    checks, which must all hold."""
    last = None
    steady = 0
    while steady < 3:
        market = ok(api.get("/v1/market/EUR"))
        views = [ok(api.get(f"/v1/portfolios/{p}"))["composition"] for p in portfolios]
        now = (
            market["sold"],
            market["waiting_for_the_ledger"],
            [(v["invested"], v["wanted"]) for v in views],
        )
        steady = steady + 1 if now == last and market["waiting_for_the_ledger"] == "0.00" else 0
        last = now
        time.sleep(0.3)
    checks = ok(api.get("/v1/market/EUR/checks"))
    assert checks["ok"], checks
    return checks


def test_an_investor_short_of_cash_strands_nothing_and_an_investor_with_cash_buys_the_rest(
    api: httpx.Client,
) -> None:
    ok(api.put("/v1/lenders/acme", json={"name": "Acme"}))
    config = {"retained_share": "0", "margin": "0.02", "allow_double_amounts": False}
    ok(api.put("/v1/lenders/acme/config", json=config))
    ok(api.put("/v1/investors/ann", json={"name": "Ann"}))
    ok(api.post("/v1/investors/ann/deposits", json={"amount": "100.00", "currency": "EUR", "key": "a1"}))
    ann = ok(
        api.post(
            "/v1/investors/ann/portfolios",
            json={
                "currency": "EUR",
                "total": "2000.00",
                "max_per_loan": "100.00",
                "min_ticket": "10.00",
                "buckets": [ANY],
            },
        )
    )["portfolio_id"]
    tape = [loan(f"L{n}", "100.00") for n in range(10)] + [loan("AON", "200.00", aon=True)]
    batch = ok(api.post("/v1/lenders/acme/batches", content=b"".join(map(bson.encode, tape)), headers=BSON))
    wait_for(lambda: ok(api.get(f"/v1/batches/{batch['batch_id']}"))["status"] == "completed", "the batch")
    checks = quiet(api, [ann])
    view = ok(api.get(f"/v1/portfolios/{ann}"))
    assert (view["composition"]["invested"], view["state"]) == ("100.00", "insufficient_cash")
    assert checks["checks"][0]["figures"]["confirmed"] == 10_000

    ok(api.put("/v1/investors/bob", json={"name": "Bob"}))
    ok(api.post("/v1/investors/bob/deposits", json={"amount": "5000.00", "currency": "EUR", "key": "b1"}))
    bob = ok(
        api.post(
            "/v1/investors/bob/portfolios",
            json={
                "currency": "EUR",
                "total": "1100.00",
                "max_per_loan": "200.00",
                "min_ticket": "10.00",
                "tranche_percent": "100",
                "buckets": [ANY],
            },
        )
    )["portfolio_id"]
    wait_for(lambda: ok(api.get("/v1/market/EUR"))["supply"]["amount"] == "0.00", "every loan sold")
    checks = quiet(api, [ann, bob])
    market = ok(api.get("/v1/market/EUR"))
    assert (market["sold"], market["offered"], market["fill_rate"]) == ("1200.00", "1200.00", "1.0000")
    aon = ok(api.get("/v1/lenders/acme/loans/AON/market"))
    assert aon["state"] == "sold"
    assert [(s["investor_id"], s["amount"], s["investor_rate"]) for s in aon["sales"]] == [
        ("bob", "200.00", "0.08")
    ]
    holdings = ok(api.get("/v1/investors/bob/holdings"))
    assert sum(Decimal(h["held_principal"]) for h in holdings) == Decimal("1100.00")
    assert checks["checks"][4]["ok"]  # the ledger balances


def portfolio(api: httpx.Client, investor: str, total: str, **terms: str) -> str:
    body = {
        "currency": "EUR",
        "total": total,
        "max_per_loan": "100.00",
        "min_ticket": "10.00",
        "tranche_percent": "100",
        "buckets": [ANY],
        **terms,
    }
    portfolio_id: str = ok(api.post(f"/v1/investors/{investor}/portfolios", json=body))["portfolio_id"]
    return portfolio_id


def upload(api: httpx.Client, lender: str, documents: list[dict[str, Any]]) -> None:
    batch = ok(
        api.post(f"/v1/lenders/{lender}/batches", content=b"".join(map(bson.encode, documents)), headers=BSON)
    )
    wait_for(lambda: ok(api.get(f"/v1/batches/{batch['batch_id']}"))["status"] == "completed", "the batch")


def paid(document: dict[str, Any], principal: str, interest: str, outstanding: str) -> dict[str, Any]:
    return {
        **document,
        "outstanding_principal": Decimal128(outstanding),
        "payments": [
            {
                "date": datetime(2026, 12, 1),
                "principal": Decimal128(principal),
                "interest": Decimal128(interest),
            }
        ],
        "next_payment_date": datetime(2027, 1, 1),
    }


def test_repaid_principal_is_put_to_work_again_unless_the_investor_keeps_it(api: httpx.Client) -> None:
    ok(api.put("/v1/lenders/acme", json={"name": "Acme"}))
    ok(
        api.put(
            "/v1/lenders/acme/config",
            json={"retained_share": "0", "margin": "0.02", "allow_double_amounts": False},
        )
    )
    for investor in ("ann", "bob"):
        ok(api.put(f"/v1/investors/{investor}", json={"name": investor}))
        ok(
            api.post(
                f"/v1/investors/{investor}/deposits",
                json={"amount": "200.00", "currency": "EUR", "key": investor},
            )
        )
    ann = portfolio(api, "ann", "200.00")
    bob = portfolio(api, "bob", "200.00", keep_uninvested="1000.00")
    first = [loan(f"L{n}", "100.00") for n in range(4)]
    upload(api, "acme", first)
    quiet(api, [ann, bob])
    invested = {p: ok(api.get(f"/v1/portfolios/{p}"))["composition"]["invested"] for p in (ann, bob)}
    assert invested == {ann: "200.00", bob: "0.00"}  # bob keeps 1,000.00 uninvested: he has only 200.00

    holdings = ok(api.get("/v1/investors/ann/holdings"))
    owned = sorted(h["loan_id"] for h in holdings)
    upload(api, "acme", [paid(first[int(owned[0][1:])], "50.00", "0.80", "50.00")])
    checks = quiet(api, [ann, bob])
    view = ok(api.get(f"/v1/portfolios/{ann}"))
    assert view["composition"]["invested"] == "200.00", view  # the 50.00 that came back went to work again
    bought = [h for h in ok(api.get("/v1/investors/ann/holdings")) if h["loan_id"] not in owned]
    assert [h["invested"] for h in bought] == ["50.00"]  # into a loan still on offer
    assert checks["ok"]

    upload(api, "acme", [{**first[int(owned[1][1:])], "status": "written_off"}])
    quiet(api, [ann, bob])
    view = ok(api.get(f"/v1/portfolios/{ann}"))
    assert view["composition"]["written_off"] == "100.00"  # a loss, shown as one, not as money held
    assert Decimal(view["composition"]["invested"]) <= Decimal("200.00")
