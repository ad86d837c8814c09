"""The ledger role: its handlers (each idempotent), its timer, its wiring by bootstrap, and the statements it
serves over the bus."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from ledger_examples import available, balance, bid, eur, fund, matched
from sqlalchemy import Engine

from tranche.bootstrap import Container
from tranche.bus import Bus, EventCodec
from tranche.crm import register_lender
from tranche.intake import LoanKey, LoansChanged, LoansLeftActive
from tranche.intake.tape import TapeFormat
from tranche.ledger import (
    HANDLERS,
    LedgerService,
    ReadStatement,
    SqlLedgerStore,
    chart,
    on_timer,
    request_statement,
    serve_statements,
)
from tranche.ledger.errors import ReservationNotFoundError
from tranche.ledger.handlers import post_funded_bids, settle_loan_versions, void_rolled_back_bids
from tranche.matching import BidsRolledBack, LoanFunded
from tranche.shared.clock import ManualClock


def state(engine: Engine) -> list[tuple[Any, ...]]:
    """Everything the ledger stores (and what it published), to compare before and after a handler."""
    with engine.connect() as conn:
        return [
            *conn.exec_driver_sql("SELECT * FROM ledger_accounts ORDER BY id").all(),
            *conn.exec_driver_sql("SELECT id, amount FROM ledger_transfers ORDER BY seq").all(),
            *conn.exec_driver_sql(
                "SELECT bid_id, status, written_off FROM ledger_holdings ORDER BY bid_id"
            ).all(),
            *conn.exec_driver_sql("SELECT * FROM ledger_loans").all(),
            *conn.exec_driver_sql("SELECT topic FROM bus_outbox ORDER BY seq").all(),
        ]


def test_the_role_handles_fundings_roll_backs_and_loan_versions() -> None:
    assert set(HANDLERS) == {LoanFunded, BidsRolledBack, LoansChanged, LoansLeftActive}


def test_a_funding_delivered_twice_is_posted_once(engine: Engine) -> None:
    ledger = LedgerService(SqlLedgerStore(engine, ManualClock()), ManualClock())
    ledger.deposit("ann", eur("100.00"), "d")
    ledger.reserve([matched(bid("b1", "ann", 3_000), bid("b2", "ann", 3_000))])
    event = LoanFunded("lender1", "L1", 1, "EUR", ("b1",))
    post_funded_bids(event, ledger)
    before = state(engine)
    post_funded_bids(event, ledger)
    assert state(engine) == before
    assert balance(ledger, "hold:b1") == 3_000


def test_a_roll_back_delivered_twice_releases_the_cash_once(engine: Engine) -> None:
    ledger = LedgerService(SqlLedgerStore(engine, ManualClock()), ManualClock())
    ledger.deposit("ann", eur("100.00"), "d")
    ledger.reserve([matched(bid("b1", "ann", 3_000))])
    event = BidsRolledBack("lender1", "L1", "loan changed", ("b1", "refused-by-the-ledger"))
    void_rolled_back_bids(event, ledger)
    before = state(engine)
    void_rolled_back_bids(event, ledger)
    assert state(engine) == before
    assert available(ledger, "ann") == 10_000


def test_a_funding_that_names_a_bid_never_reserved_is_delivered_again_after_the_others_are_posted(
    engine: Engine,
) -> None:
    ledger = LedgerService(SqlLedgerStore(engine, ManualClock()), ManualClock())
    ledger.deposit("ann", eur("100.00"), "d")
    ledger.reserve([matched(bid("b1", "ann", 3_000))])
    with pytest.raises(ReservationNotFoundError):
        post_funded_bids(LoanFunded("lender1", "L1", 1, "EUR", ("b1", "ghost")), ledger)
    assert balance(ledger, "hold:b1") == 3_000


def tape(*loans: dict[str, Any]) -> bytes:
    base = {
        "status": "active",
        "currency": "EUR",
        "principal": "3000.00",
        "outstanding_principal": "3000.00",
        "interest_rate": "0.10",
        "term_months": 12,
        "schedule_type": "bullet",
        "issue_date": "2026-01-01",
        "borrower": {"country": "EE", "age": 40, "income_monthly": "3000", "credit_score": 700},
    }
    return b"".join(json.dumps({**base, **loan}).encode() + b"\n" for loan in loans)


def test_loan_versions_delivered_twice_are_settled_once(container: Container) -> None:
    with container.engine.begin() as conn:
        register_lender(conn, "lender1", "Lender One", at=container.clock.now())
    container.intake.receive("lender1", TapeFormat.NDJSON, [tape({"loan_id": "L1"}, {"loan_id": "L2"})])
    container.runner.run_until_idle(max_seconds=60)
    ledger = container.ledger
    fund(ledger, bid("b1", "ann", 200_000), bid("b2", "ben", 100_000))
    paid = {"date": "2026-02-01", "principal": "300.00", "interest": "25.00"}
    second = container.intake.receive(
        "lender1",
        TapeFormat.NDJSON,
        [
            tape(
                {"loan_id": "L1", "outstanding_principal": "2700.00", "payments": [paid]},
                {"loan_id": "L2", "term_months": 6},
            )
        ],
    )
    container.runner.run_until_idle(max_seconds=60)
    changed = LoansChanged("lender1", second.batch_id, (LoanKey("L1", 2), LoanKey("L2", 2)))
    assert settle_loan_versions(changed, ledger, container.engine) == 1  # nobody holds L2: not even read
    before = state(container.engine)
    settle_loan_versions(changed, ledger, container.engine)
    assert state(container.engine) == before
    assert (available(ledger, "ann"), available(ledger, "ben")) == (20_000 + 1_667, 10_000 + 833)
    third = container.intake.receive(
        "lender1",
        TapeFormat.NDJSON,
        [tape({"loan_id": "L1", "status": "written_off", "outstanding_principal": "2700.00"})],
    )
    container.runner.run_until_idle(max_seconds=60)
    gone = LoansLeftActive("lender1", third.batch_id, "written_off", (LoanKey("L1", 3),))
    settle_loan_versions(gone, ledger, container.engine)
    before = state(container.engine)
    settle_loan_versions(gone, ledger, container.engine)
    assert state(container.engine) == before
    assert balance(ledger, "hold:b1") == 0 and balance(ledger, "hold:b2") == 0


def test_the_timer_publishes_due_drift_and_voids_reservations_that_timed_out(engine: Engine) -> None:
    clock = ManualClock()
    ledger = LedgerService(
        SqlLedgerStore(engine, clock),
        clock,
        drift_window=timedelta(seconds=30),
        reservation_timeout=timedelta(minutes=1),
    )
    fund(ledger, bid("b1", "ann", 1_000))
    ledger.deposit("ann", eur("10.00"), "more")
    ledger.reserve([matched(bid("b2", "ann", 500), loan="L2")])
    assert on_timer(ledger) == 0
    clock.advance(timedelta(minutes=1))
    assert on_timer(ledger) == 1  # pf-ann drifted
    assert available(ledger, "ann") == 1_000
    before = state(engine)
    assert on_timer(ledger) == 0
    assert state(engine) == before


def test_bootstrap_subscribes_the_ledger_role_to_fundings_on_the_bus(container: Container) -> None:
    ledger = container.ledger
    ledger.deposit("ann", eur("100.00"), "d")
    ledger.reserve([matched(bid("b1", "ann", 2_500))])

    async def scenario() -> None:
        await container.start_messaging()
        try:
            event = LoanFunded("lender1", "L1", 1, "EUR", ("b1",))
            for _ in range(2):
                await container.bus.publish(container.codec.to_message(event, event.topic))
            for _ in range(300):
                if ledger.store.accounts(["hold:b1"]).get("hold:b1", None) and balance(ledger, "hold:b1"):
                    break
                await asyncio.sleep(0.02)
        finally:
            await container.stop_messaging()

    asyncio.run(scenario())
    assert balance(ledger, "hold:b1") == 2_500
    assert balance(ledger, chart.lender_settlement("lender1", "EUR").id) == 2_500


@pytest.mark.anyio
async def test_a_statement_is_streamed_part_by_part_from_the_ledger_role(bus: Bus, engine: Engine) -> None:
    clock = ManualClock()
    store = SqlLedgerStore(engine, clock)
    ledger = LedgerService(store, clock)
    for n in range(1_200):
        ledger.deposit("ann", eur("1.00"), f"d{n}")
    from tranche.ledger import LedgerReports

    served = await serve_statements(bus, EventCodec(), LedgerReports(store))
    try:
        parts = [
            p async for p in request_statement(bus, EventCodec(), ReadStatement("ann", "EUR"), timeout=20)
        ]
    finally:
        await served.cancel()
    assert parts[0].opening == 0 and parts[-1].closing == 120_000
    assert [len(p.movements) for p in parts] == [500, 500, 200, 0]
    assert parts[-2].movements[-1].balance == 120_000
