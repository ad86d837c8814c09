"""The market as one system, under random steps: deposits, withdrawals, portfolios created, edited, paused and
resumed, tapes of new, changed, paid, repaid, withdrawn and written-off loans, and restarts of the node. After
every step, once the node has settled, every invariant of the market holds, on SQLite and on PostgreSQL:

- what the matcher confirmed is what the ledger funded, never more than was offered; all-or-nothing loans are
  sold whole or not at all; trading shows what the ledger holds; the ledger sums to zero (the market's checks);
- no investor's money appears or vanishes: cash + principal held = deposits - withdrawals + interest received -
  principal written off;
- no portfolio commits more than its total, nor more than its cap to one loan.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from market_world import Lender, Node, ok

INVESTORS = ("ann", "bob", "cat")
LENDERS = ("acme", "bolt")
ANY = {"name": "any loan", "weight": "100", "criteria": {}}


def eur(minor: int) -> str:
    return str(Decimal(minor).scaleb(-2))


class MarketMachine(RuleBasedStateMachine):
    new_node: Callable[[], Node]

    def __init__(self) -> None:
        super().__init__()
        self.node = self.new_node()
        self.keys = itertools.count(1)
        self.lenders = {name: Lender(name) for name in LENDERS}
        self.portfolios: dict[str, list[str]] = {name: [] for name in INVESTORS}

    def teardown(self) -> None:
        import os

        if os.environ.get("MACHINE_DEBUG"):
            print(
                "STATS", self.node.checks()["checks"][0]["figures"], ok(self.node.api.get("/v1/market/EUR"))
            )
        self.node.stop()

    @initialize()
    def register_clients(self) -> None:
        api = self.node.api
        for lender in LENDERS:
            ok(api.put(f"/v1/lenders/{lender}", json={"name": lender.title()}))
            config = {"retained_share": "0.10", "margin": "0.02", "allow_double_amounts": False}
            ok(api.put(f"/v1/lenders/{lender}/config", json=config))
        for investor in INVESTORS:
            ok(api.put(f"/v1/investors/{investor}", json={"name": investor.title()}))
        # a market in motion from the first step: cash, demand and loans
        for number, investor in enumerate(INVESTORS):
            body = {"amount": eur(30_000 + 20_000 * number), "currency": "EUR", "key": f"seed-{investor}"}
            ok(api.post(f"/v1/investors/{investor}/deposits", json=body))
            self.create_portfolio(investor, total=40_000 + 10_000 * number, cap=10_000, tranche="50")
        self.node.upload(
            "acme", self.lenders["acme"].new([20_000, 30_000, 10_000, 40_000], [False, True, False, False])
        )

    # -- investors -------------------------------------------------------------------------------------------

    @rule(investor=st.sampled_from(INVESTORS), amount=st.integers(1, 60).map(lambda n: n * 1_000))
    def deposit(self, investor: str, amount: int) -> None:
        body = {"amount": eur(amount), "currency": "EUR", "key": f"d{next(self.keys)}"}
        ok(self.node.api.post(f"/v1/investors/{investor}/deposits", json=body))
        self.node.settle()

    @rule(investor=st.sampled_from(INVESTORS), amount=st.integers(1, 40).map(lambda n: n * 1_000))
    def withdraw(self, investor: str, amount: int) -> None:
        body = {"amount": eur(amount), "currency": "EUR", "key": f"w{next(self.keys)}"}
        response = self.node.api.post(f"/v1/investors/{investor}/withdrawals", json=body)
        assert response.status_code in (201, 404, 409), response.text  # more than available: refused
        self.node.settle()

    @rule(
        investor=st.sampled_from(INVESTORS),
        total=st.integers(5, 50).map(lambda n: n * 10_000),
        cap=st.sampled_from([5_000, 10_000, 20_000]),
        tranche=st.sampled_from(["10", "50", "100"]),
    )
    def create_portfolio(self, investor: str, total: int, cap: int, tranche: str) -> None:
        if len(self.portfolios[investor]) >= 2:
            return
        body = {
            "currency": "EUR",
            "total": eur(total),
            "max_per_loan": eur(cap),
            "min_ticket": "10.00",
            "tranche_percent": tranche,
            "buckets": [ANY],
        }
        created = ok(self.node.api.post(f"/v1/investors/{investor}/portfolios", json=body))
        self.portfolios[investor].append(created["portfolio_id"])
        self.node.settle()

    @rule(data=st.data(), action=st.sampled_from(["pause", "resume", "edit"]))
    def change_portfolio(self, data: st.DataObject, action: str) -> None:
        owned = [p for ps in self.portfolios.values() for p in ps]
        if not owned:
            return
        portfolio_id = data.draw(st.sampled_from(owned))
        if action == "edit":
            current = ok(self.node.api.get(f"/v1/portfolios/{portfolio_id}"))
            if current["status"] == "closed":
                return
            body = {
                "currency": "EUR",
                "total": str(
                    Decimal(current["total"]) + Decimal(data.draw(st.sampled_from([-100, 100, 300])))
                ),
                "max_per_loan": current["max_per_loan"],
                "min_ticket": current["min_ticket"],
                "tranche_percent": current["tranche_percent"],
                "buckets": [ANY],
            }
            response = self.node.api.put(f"/v1/portfolios/{portfolio_id}", json=body)
        else:
            response = self.node.api.post(f"/v1/portfolios/{portfolio_id}/{action}")
        assert response.status_code in (200, 409, 422), response.text
        self.node.settle()

    # -- lenders ---------------------------------------------------------------------------------------------

    @rule(
        lender=st.sampled_from(LENDERS),
        amounts=st.lists(st.integers(1, 5).map(lambda n: n * 10_000), min_size=1, max_size=4),
        data=st.data(),
    )
    def new_loans(self, lender: str, amounts: list[int], data: st.DataObject) -> None:
        aon = data.draw(st.lists(st.booleans(), min_size=len(amounts), max_size=len(amounts)))
        self.node.upload(lender, self.lenders[lender].new(amounts, aon))

    @rule(lender=st.sampled_from(LENDERS), data=st.data(), share=st.sampled_from(["0.1", "0.3", "1"]))
    def payments(self, lender: str, data: st.DataObject, share: str) -> None:
        book = self.lenders[lender]
        active = book.active()
        if not active:
            return
        chosen = data.draw(
            st.lists(st.sampled_from(active), min_size=1, max_size=3, unique_by=lambda x: x.loan_id)
        )
        self.node.upload(lender, [book.pay(loan, Decimal(share)) for loan in chosen])

    @rule(
        lender=st.sampled_from(LENDERS),
        data=st.data(),
        status=st.sampled_from(["repaid", "withdrawn", "written_off"]),
    )
    def loans_leave(self, lender: str, data: st.DataObject, status: str) -> None:
        book = self.lenders[lender]
        active = book.active()
        if not active:
            return
        loan = data.draw(st.sampled_from(active))
        self.node.upload(lender, [book.end(loan, status)])

    @rule(lender=st.sampled_from(LENDERS), data=st.data())
    def loan_changes(self, lender: str, data: st.DataObject) -> None:
        """A correction that is not a payment: the loan's rate changes, so a new version is offered."""
        book = self.lenders[lender]
        active = book.active()
        if not active:
            return
        loan = data.draw(st.sampled_from(active))
        loan.rate = Decimal("0.11") if loan.rate != Decimal("0.11") else Decimal("0.13")
        self.node.upload(lender, [loan.document()])

    # -- the platform ----------------------------------------------------------------------------------------

    @rule()
    def restart(self) -> None:
        self.node.restart()
        self.node.settle()

    # -- invariants ------------------------------------------------------------------------------------------

    @invariant()
    def the_markets_checks_hold(self) -> None:
        checks = self.node.checks()
        assert checks["ok"], [c for c in checks["checks"] if not c["ok"]]

    @invariant()
    def no_investors_money_appears_or_vanishes(self) -> None:
        for investor in INVESTORS:
            lines = self.node.statement(investor)
            if not lines:
                continue
            moved: dict[str, Decimal] = {}
            for line in lines:
                if line.get("type") == "movement":
                    moved[line["code"]] = moved.get(line["code"], Decimal(0)) + Decimal(line["amount"])
            cash = Decimal(lines[-1]["balance"])
            holdings = ok(self.node.api.get(f"/v1/investors/{investor}/holdings"))
            held = sum((Decimal(h["held_principal"]) for h in holdings), Decimal(0))
            lost = sum((Decimal(h["written_off"]) for h in holdings), Decimal(0))
            deposited = moved.get("deposit", Decimal(0))
            withdrawn = -moved.get("withdrawal", Decimal(0))
            interest = moved.get("interest", Decimal(0))
            assert cash + held == deposited - withdrawn + interest - lost, (investor, moved, cash, held, lost)

    @invariant()
    def no_portfolio_commits_more_than_its_total(self) -> None:
        for portfolio_id in (p for ps in self.portfolios.values() for p in ps):
            view = ok(self.node.api.get(f"/v1/portfolios/{portfolio_id}"))
            composition = view["composition"]
            committed = Decimal(composition["invested"]) + Decimal(composition["wanted"])
            assert committed <= Decimal(view["total"]) + Decimal(view["max_per_loan"]), view


def run_machine(new_node: Callable[[], Node], examples: int, steps: int) -> None:
    MarketMachine.new_node = staticmethod(new_node)  # type: ignore[assignment]
    run_state_machine_as_test(
        MarketMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.mark.slow
def test_every_invariant_holds_after_every_step_on_sqlite(tmp_path: Path, sqlite_template: Path) -> None:
    import shutil

    runs = itertools.count()

    def new_node() -> Node:
        workdir = tmp_path / f"run{next(runs)}"
        workdir.mkdir()
        shutil.copyfile(sqlite_template, workdir / "tranche.db")
        return Node(f"sqlite:///{workdir / 'tranche.db'}", workdir)

    run_machine(new_node, examples=6, steps=14)


@pytest.mark.slow
@pytest.mark.postgres
def test_every_invariant_holds_after_every_step_on_postgres(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server: Any = request.getfixturevalue("postgres_server")
    template: str = request.getfixturevalue("postgres_template")
    runs = itertools.count()

    def new_node() -> Node:
        number = next(runs)
        workdir = tmp_path / f"run{number}"
        workdir.mkdir()
        return Node(server.create_database(f"machine_{number}", template=template), workdir)

    run_machine(new_node, examples=4, steps=12)
