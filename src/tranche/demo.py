"""``tranche demo``: a whole market day, played through the real HTTP API, ending with a summary.

Each lender sends its end-of-day tape; the next day it sends the changed state (payments received, loans
repaid, a few documents with mistakes, new loans), and one lender withdraws a loan intra-day. Everything goes
through a real server on loopback, the same one ``tranche serve`` runs.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import bson
import click
import httpx

from tranche.config import Settings
from tranche.intake.tapegen import NextTapeShares, first_tape, next_tape, write_tape

DAY1 = date(2026, 11, 23)


@dataclass(frozen=True)
class DemoLender:
    lender_id: str
    name: str
    seed: int
    corrupt_tail: bool = False


LENDERS = [
    DemoLender("iberia-credit", "Iberia Credit S.L.", 11),
    DemoLender("baltic-lend", "Baltic Lend AS", 22, corrupt_tail=True),
    DemoLender("rhein-kredit", "Rhein Kredit GmbH", 33),
]


@dataclass
class DemoInvestor:
    investor_id: str
    deposit: str
    portfolio: dict[str, Any]
    portfolio_id: str | None = None


INVESTORS = [
    DemoInvestor(
        "ana",
        "20000.00",
        {  # the example of issue 5, as written
            "currency": "EUR",
            "total": "20000.00",
            "max_per_loan": "500.00",
            "min_ticket": "10.00",
            "buckets": [
                {
                    "name": "Spain, 28-35, good credit",
                    "weight": "75",
                    "criteria": {
                        "countries": ["ES"],
                        "borrower_age": {"min": 28, "max": 35},
                        "credit_score": {"min": 700},
                        "min_monthly_income": "2500",
                    },
                },
                {"name": "any low score", "weight": "25", "criteria": {"credit_score": {"max": 599}}},
            ],
        },
    ),
    DemoInvestor(
        "ben",
        "15000.00",
        {
            "currency": "EUR",
            "total": "15000.00",
            "max_per_loan": "300.00",
            "min_ticket": "25.00",
            "buckets": [
                {"name": "risk A", "weight": "60", "criteria": {"risk_groups": ["A"]}},
                {
                    "name": "risk B or C at 9%+",
                    "weight": "40",
                    "criteria": {"risk_groups": ["B", "C"], "min_investor_rate": "0.09"},
                },
            ],
        },
    ),
    DemoInvestor(
        "chloe",
        "8000.00",
        {
            "currency": "EUR",
            "total": "8000.00",
            "max_per_loan": "200.00",
            "min_ticket": "50.00",
            "buckets": [
                {
                    "name": "12%+ outside Germany",
                    "weight": "100",
                    "criteria": {
                        "min_investor_rate": "0.12",
                        "countries": ["ES", "FR", "IT", "PT", "EE", "LV", "LT"],
                    },
                }
            ],
        },
    ),
]


class _Server:
    """The API and the workers in this process, on a loopback port."""

    def __init__(self, settings: Settings, port: int) -> None:
        import uvicorn

        from tranche.api.app import create_app
        from tranche.bootstrap import bootstrap
        from tranche.process import tune_for_workers

        self.container = bootstrap(settings)
        tune_for_workers()
        self.container.start_workers()
        config = uvicorn.Config(create_app(self.container), host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise click.ClickException(
                    f"the API could not start on 127.0.0.1:{port} (is the port in use?)"
                )
            time.sleep(0.05)

    def wait(self) -> None:
        try:
            while self.thread.is_alive():
                self.thread.join(0.5)
        except KeyboardInterrupt:
            pass

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.container.close()


def run_demo(*, workdir: Path, port: int, loans: int, serve_after: bool) -> dict[str, Any]:
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "tapes").mkdir(parents=True)
    settings = replace(
        Settings.from_env(),
        database_url=f"sqlite:///{workdir / 'tranche.db'}",
        archive_dir=workdir / "archive",
        feedback_dir=workdir / "feedback",
        log_level="WARNING",
    )
    server = _Server(settings, port)
    base = f"http://127.0.0.1:{port}"
    click.echo(f"tranche demo: API on {base}/v1/docs, store {workdir / 'tranche.db'}")
    try:
        with httpx.Client(base_url=base, timeout=60) as api:
            summary = _play_day(api, workdir / "tapes", loans)
        _print_summary(summary)
        if serve_after:
            click.echo(f"\nstill serving on {base} (OpenAPI at {base}/v1/docs); Ctrl-C to stop")
            server.wait()
        return summary
    finally:
        server.stop()


def _play_day(api: httpx.Client, tapes: Path, loans: int) -> dict[str, Any]:
    summary: dict[str, Any] = {"batches": [], "checks": []}
    for lender in LENDERS:
        _ok(api.put(f"/v1/lenders/{lender.lender_id}", json={"name": lender.name}))

    click.echo("\n== investors deposit cash and set out what they want")
    for investor in INVESTORS:
        _ok(api.put(f"/v1/investors/{investor.investor_id}", json={"name": investor.investor_id.title()}))
        _ok(
            api.post(
                f"/v1/investors/{investor.investor_id}/deposits",
                json={
                    "amount": investor.deposit,
                    "currency": "EUR",
                    "key": f"demo-deposit-{investor.investor_id}",
                },
            )
        )
        created = _ok(api.post(f"/v1/investors/{investor.investor_id}/portfolios", json=investor.portfolio))
        summary.setdefault("portfolios", {})[investor.investor_id] = created["portfolio_id"]
        investor.portfolio_id = created["portfolio_id"]
        buckets = ", ".join(f"{b['weight']}% {b['name']}" for b in investor.portfolio["buckets"])
        click.echo(
            f"  {investor.investor_id:<6} deposits {investor.deposit} EUR; portfolio {investor.portfolio['total']} EUR: {buckets}"
        )

    click.echo(f"\n== day 1 ({DAY1}): each lender sends its end-of-day tape of {loans} loans")
    day1: dict[str, Path] = {}
    for lender in LENDERS:
        path = tapes / f"{lender.lender_id}-{DAY1}.bson"
        write_tape(
            first_tape(loans, lender.lender_id, lender.seed, DAY1), path, corrupt_tail=lender.corrupt_tail
        )
        day1[lender.lender_id] = path
        summary["batches"].append(_upload(api, lender.lender_id, path, "day 1"))

    _settle(api, summary, "day 1")
    day2_date = DAY1 + timedelta(days=1)
    click.echo(f"\n== day 2 ({day2_date}): payments, repayments, new loans and a few mistakes")
    for lender in LENDERS:
        path = tapes / f"{lender.lender_id}-{day2_date}.bson"
        with day1[lender.lender_id].open("rb") as previous:
            shares = NextTapeShares(changed=0.15, repaid=0.03, invalid=0.01, new=loans // 10)
            write_tape(next_tape(previous, lender.lender_id, lender.seed + 1, day2_date, shares), path)
        summary["batches"].append(_upload(api, lender.lender_id, path, "day 2"))

    click.echo("\n== intra-day: iberia-credit withdraws a loan it has just had repaid off-platform")
    lender_id = LENDERS[0].lender_id
    withdrawn_id = f"{lender_id}-00000007"
    current = _ok(api.get(f"/v1/lenders/{lender_id}/loans/{withdrawn_id}"))["document"]
    from bson import json_util

    doc = json_util.loads(json_util.dumps(current))
    doc["status"] = "withdrawn"
    path = tapes / f"{lender_id}-{day2_date}-intraday.bson"
    path.write_bytes(bson.encode(doc))
    summary["batches"].append(_upload(api, lender_id, path, "intra-day"))
    versions = _ok(api.get(f"/v1/lenders/{lender_id}/loans/{withdrawn_id}/versions"))["versions"]
    summary["withdrawn_loan"] = {"loan_id": withdrawn_id, "statuses": [v["status"] for v in versions]}

    _settle(api, summary, "day 2")
    summary["investors"] = _investor_reports(api)
    for investor_id, report in summary["investors"].items():
        summary["checks"].append(
            (
                f"{investor_id}: the portfolio's composition is within its tolerance of target",
                report["within_tolerance"],
            )
        )
        summary["checks"].append(
            (
                f"{investor_id}: cash + principal held = deposits + interest received - losses written off",
                report["cash"] + report["held"]
                == report["deposited"] + report["interest"] - report["written_off"],
            )
        )
    again = _ok(
        api.post(
            f"/v1/lenders/{lender_id}/batches",
            content=path.read_bytes(),
            headers={"content-type": "application/bson"},
        )
    )
    summary["checks"].append(
        (
            "the same bytes uploaded twice give the same batch",
            again["batch_id"] == summary["batches"][-1]["batch_id"] and not again["created"],
        )
    )
    for b in summary["batches"]:
        c = b["counts"]
        summary["checks"].append(
            (
                f"{b['lender_id']} {b['label']}: new + changed + unchanged + invalid = read (+1 for a damaged tail)",
                c["new"] + c["changed"] + c["unchanged"] + c["invalid"]
                == c["read"] + (1 if b["damaged"] else 0),
            )
        )
    summary["checks"].append(
        (
            "the withdrawn loan's versions end in 'withdrawn'",
            summary["withdrawn_loan"]["statuses"][-1] == "withdrawn",
        )
    )
    return summary


def _settle(api: httpx.Client, summary: dict[str, Any], label: str) -> None:
    """Wait until matching and settlement are quiet: what every portfolio holds stops moving."""
    deadline = time.monotonic() + 120
    last: list[str] | None = None
    steady = 0
    while steady < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = [
            _ok(api.get(f"/v1/portfolios/{pid}"))["composition"]["invested"]
            for pid in summary["portfolios"].values()
        ]
        now += [
            h["held_principal"]
            for i in INVESTORS
            for h in _ok(api.get(f"/v1/investors/{i.investor_id}/holdings"))
        ]
        steady = steady + 1 if now == last else 0
        last = now
    click.echo(f"\n  after {label}, the market has settled:")
    for investor in INVESTORS:
        view = _ok(api.get(f"/v1/portfolios/{summary['portfolios'][investor.investor_id]}"))
        composition = view["composition"]
        parts = ", ".join(
            f"{b['name']} {b['actual_percent']}% (target {b['target_percent']}%)"
            for b in composition["buckets"]
        )
        click.echo(
            f"    {investor.investor_id:<6} invested {composition['invested']:>10} of {view['total']} EUR: {parts}"
        )


def _investor_reports(api: httpx.Client) -> dict[str, Any]:
    import json as _json
    from decimal import Decimal

    reports: dict[str, Any] = {}
    click.echo("\n== investors at the end of the day")
    for investor in INVESTORS:
        lines = [
            _json.loads(line)
            for line in api.get(
                f"/v1/investors/{investor.investor_id}/statement", params={"currency": "EUR"}
            ).text.splitlines()
        ]
        movements = [m for m in lines if m["type"] == "movement"]
        holdings = _ok(api.get(f"/v1/investors/{investor.investor_id}/holdings"))
        held = sum((Decimal(h["held_principal"]) for h in holdings), Decimal(0))
        written_off = sum((Decimal(h["written_off"]) for h in holdings), Decimal(0))
        by_code: dict[str, Decimal] = {}
        for m in movements:
            by_code[m["code"]] = by_code.get(m["code"], Decimal(0)) + Decimal(m["amount"])
        cash = Decimal(lines[-1]["balance"])
        xirr = _ok(api.get(f"/v1/investors/{investor.investor_id}/return", params={"currency": "EUR"}))[
            "xirr"
        ]
        # The demo's day passes in seconds of real time: a yearly rate over seconds means nothing.
        xirr = xirr or "n/a (the cash flows are seconds apart)"
        view = _ok(api.get(f"/v1/portfolios/{investor.portfolio_id}")) if investor.portfolio_id else None
        reports[investor.investor_id] = {
            "cash": cash,
            "held": held,
            "written_off": written_off,
            "deposited": by_code.get("deposit", Decimal(0)),
            "interest": by_code.get("interest", Decimal(0)),
            "movements": by_code,
            "loans": len(holdings),
            "xirr": xirr,
            "within_tolerance": bool(view and view["composition"]["within_tolerance"]),
        }
        codes = ", ".join(f"{code} {amount}" for code, amount in sorted(by_code.items()))
        click.echo(
            f"  {investor.investor_id:<6} cash {cash} EUR, principal held {held} EUR in {len(holdings)} loans;"
            f" statement: {codes}; XIRR {xirr}"
        )
    return reports


def _upload(api: httpx.Client, lender_id: str, path: Path, label: str) -> dict[str, Any]:
    with path.open("rb") as handle:
        receipt = _ok(
            api.post(
                f"/v1/lenders/{lender_id}/batches",
                content=iter(lambda: handle.read(1 << 16), b""),
                headers={"content-type": "application/bson"},
            )
        )
    batch_id = receipt["batch_id"]
    deadline = time.monotonic() + 600
    while True:
        status = _ok(api.get(f"/v1/batches/{batch_id}"))
        if status["status"] == "completed":
            break
        if time.monotonic() > deadline:
            raise click.ClickException(f"batch {batch_id} did not complete: {status}")
        time.sleep(0.1)
    errors = _ok(api.get(f"/v1/batches/{batch_id}/errors", params={"limit": 3}))["errors"]
    c = status["counts"]
    click.echo(
        f"  {lender_id:<14} {label:<9} batch {batch_id}: read {c['read']:>5}  new {c['new']:>5}  changed {c['changed']:>4}"
        f"  unchanged {c['unchanged']:>5}  left active {c['withdrawn']:>3}  invalid {c['invalid']:>2}"
    )
    for e in errors:
        click.echo(
            f"      error at document {e['document']} (loan {e['loan_id']}) field {e['field']}: {e['reason']}"
        )
    return {**status, "label": label, "sample_errors": errors}


def _ok(response: httpx.Response) -> Any:
    if response.is_error:
        raise click.ClickException(
            f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
        )
    return response.json()


def _print_summary(summary: dict[str, Any]) -> None:
    click.echo("\n== summary")
    totals = {"read": 0, "new": 0, "changed": 0, "unchanged": 0, "withdrawn": 0, "invalid": 0}
    for b in summary["batches"]:
        for key in totals:
            totals[key] += b["counts"][key]
    click.echo(f"  {len(summary['batches'])} batches; " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    click.echo(
        f"  loan {summary['withdrawn_loan']['loan_id']}: versions {' -> '.join(summary['withdrawn_loan']['statuses'])}"
    )
    failed = 0
    for text, ok in summary["checks"]:
        failed += not ok
        click.echo(f"  [{'ok' if ok else 'FAILED'}] {text}")
    if failed:
        raise click.ClickException(f"{failed} checks failed")
