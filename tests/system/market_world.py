"""A whole embedded node driven through its HTTP API, step by step, for the tests of the market as one system.

:class:`Node` builds the process as ``tranche serve`` does (``bootstrap()``: the store, the in-process bus, every
role) and talks to it through FastAPI's test client; the pipeline's stages run when :meth:`Node.settle` asks,
so that a test knows when a step is over. :class:`Lender` keeps the state of its loans the way a lender's system
does and writes the tapes that tell the platform what changed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import bson
from bson.decimal128 import Decimal128
from fastapi.testclient import TestClient

from tranche.api.app import create_app
from tranche.bootstrap import Container, bootstrap
from tranche.bus.outbox import unpublished_count
from tranche.config import Settings
from tranche.shared.clock import ManualClock

BSON = {"content-type": "application/bson"}
START = datetime(2026, 11, 2)


def ok(response: Any) -> Any:
    assert response.status_code < 300, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.content else None


class Node:
    """One embedded tranche process on ``database_url``; :meth:`restart` stops it and starts another on the same
    store, as an operator restarting ``tranche serve`` would."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        self.settings = replace(
            Settings(),
            database_url=database_url,
            archive_dir=workdir / "archive",
            feedback_dir=workdir / "feedback",
            run_dir=workdir / "run",
            log_level="WARNING",
            parse_processes=0,
            slice_size=50,
            drift_window_seconds=0,
        )
        self.clock = ManualClock(datetime(2026, 11, 2, 12, 0, tzinfo=UTC))
        self.container: Container
        self.api: TestClient
        self._start()

    def _start(self) -> None:
        self.container = bootstrap(self.settings, clock=self.clock)
        self.api = TestClient(create_app(self.container))
        self.api.__enter__()  # the lifespan: the bus, the relay, the market and ledger roles

    def stop(self) -> None:
        self.api.__exit__(None, None, None)
        self.container.close()

    def restart(self) -> None:
        self.stop()
        self._start()

    def settle(self, timeout: float = 60.0) -> None:
        """Run the pipeline and wait until every event is handled and nothing moves any more."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 2:
            assert time.monotonic() < deadline, "the node did not settle"
            worked = self.container.runner.run_until_idle()
            for _seconds, action in self.container.timers:
                action()
            with self.container.engine.connect() as conn:
                waiting = unpublished_count(conn)
            market = self.container.market
            unsettled = market is not None and bool(market.matching.unsettled())
            quiet = quiet + 1 if not worked and not waiting and not unsettled else 0
            time.sleep(0.05 if quiet else 0.1)

    def checks(self) -> dict[str, Any]:
        found: dict[str, Any] = ok(self.api.get("/v1/market/EUR/checks"))
        return found

    def upload(self, lender_id: str, documents: list[dict[str, Any]]) -> dict[str, Any]:
        receipt = ok(
            self.api.post(
                f"/v1/lenders/{lender_id}/batches",
                content=b"".join(map(bson.encode, documents)),
                headers=BSON,
            )
        )
        self.settle()
        status: dict[str, Any] = ok(self.api.get(f"/v1/batches/{receipt['batch_id']}"))
        assert status["status"] == "completed", status
        return status

    def statement(self, investor_id: str) -> list[dict[str, Any]]:
        response = self.api.get(f"/v1/investors/{investor_id}/statement", params={"currency": "EUR"})
        if response.status_code == 404:
            return []
        return [json.loads(line) for line in response.text.splitlines()]


@dataclass
class Loan:
    loan_id: str
    principal: int  # minor units
    outstanding: int
    rate: Decimal
    all_or_nothing: bool
    status: str = "active"
    payments: list[tuple[int, int]] = field(default_factory=list)  # (principal, interest) since the last tape
    next_payment: datetime = START + timedelta(days=30)

    def document(self) -> dict[str, Any]:
        def money(amount: int) -> Decimal128:
            return Decimal128(str(Decimal(amount).scaleb(-2)))

        doc: dict[str, Any] = {
            "loan_id": self.loan_id,
            "status": self.status,
            "currency": "EUR",
            "principal": money(self.principal),
            "outstanding_principal": money(self.outstanding),
            "interest_rate": Decimal128(str(self.rate)),
            "term_months": 12,
            "schedule_type": "annuity",
            "issue_date": START,
            "next_payment_date": self.next_payment,
            "all_or_nothing": self.all_or_nothing,
            "borrower": {
                "country": "ES",
                "age": 30,
                "income_monthly": Decimal128("3000.00"),
                "credit_score": 720,
            },
        }
        if self.payments:
            doc["payments"] = [
                {"date": self.next_payment - timedelta(days=30), "principal": money(p), "interest": money(i)}
                for p, i in self.payments
            ]
        return doc


@dataclass
class Lender:
    """A lender's own book of loans, and the tapes it sends."""

    lender_id: str
    loans: dict[str, Loan] = field(default_factory=dict)
    issued: int = 0

    def new(self, amounts: list[int], aon: list[bool]) -> list[dict[str, Any]]:
        docs = []
        for amount, whole in zip(amounts, aon, strict=True):
            self.issued += 1
            loan = Loan(f"L{self.issued}", amount, amount, Decimal("0.12"), whole)
            self.loans[loan.loan_id] = loan
            docs.append(loan.document())
        return docs

    def active(self) -> list[Loan]:
        return [loan for loan in self.loans.values() if loan.status == "active"]

    def pay(self, loan: Loan, share: Decimal) -> dict[str, Any]:
        """The borrower pays part of the principal (and a month's interest)."""
        principal = min(loan.outstanding, max(100, int(loan.outstanding * share)) // 100 * 100)
        interest = int(loan.outstanding * loan.rate / 12)
        loan.outstanding -= principal
        loan.payments = [(principal, interest)]
        loan.next_payment += timedelta(days=30)
        if loan.outstanding == 0:
            loan.status = "repaid"
        doc = loan.document()
        loan.payments = []
        return doc

    def end(self, loan: Loan, status: str) -> dict[str, Any]:
        """The loan leaves ``active``: ``repaid`` (the rest paid at once), ``withdrawn`` or ``written_off``."""
        if status == "repaid":
            loan.payments = [(loan.outstanding, int(loan.outstanding * loan.rate / 12))]
            loan.outstanding = 0
        loan.status = status
        doc = loan.document()
        loan.payments = []
        return doc
