"""Cash, fundings, roll-backs, repayments and loan outcomes through the ledger service, on SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from ledger_examples import available, balance, bid, eur, fund, loan, matched
from sqlalchemy import Engine

from tranche.ledger import (
    AmountOverflowError,
    CashAvailable,
    IdempotencyKeyReusedError,
    InsufficientCashError,
    LedgerService,
    SqlLedgerStore,
    chart,
)
from tranche.ledger.errors import ReservationNotFoundError
from tranche.matching import BidsRolledBack, LoanFunded
from tranche.shared.clock import ManualClock
from tranche.shared.money import Money


@pytest.fixture
def service(engine: Engine) -> LedgerService:
    return LedgerService(SqlLedgerStore(engine, ManualClock()), ManualClock())


def outbox(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(r[0], r[1]) for r in conn.exec_driver_sql("SELECT topic, type FROM bus_outbox ORDER BY seq")]


def test_deposits_and_withdrawals_move_cash_and_a_withdrawal_never_exceeds_it(service: LedgerService) -> None:
    first = service.deposit("alice", eur("100.00"), "k1")
    again = service.deposit("alice", eur("100.00"), "k1")  # a retried request
    assert (first.available, again.available) == (10_000, 10_000)
    assert service.withdraw("alice", eur("30.00"), "w1").available == 7_000
    with pytest.raises(InsufficientCashError) as caught:
        service.withdraw("alice", eur("70.01"), "w2")
    assert (caught.value.record, caught.value.field) == ("alice", "amount")
    assert "70.00 EUR available" in caught.value.message and "inv:" not in caught.value.message
    with pytest.raises(IdempotencyKeyReusedError) as reused:
        service.deposit("alice", eur("1.00"), "k1")
    assert (reused.value.record, reused.value.field) == ("k1", "amount")
    assert available(service, "alice") == 7_000
    assert service.store.net_by_currency() == {"EUR": (0, 0)}


def test_a_refused_withdrawal_opens_no_account(service: LedgerService) -> None:
    with pytest.raises(InsufficientCashError):
        service.withdraw("nobody", eur("1.00"), "w")
    assert service.store.accounts([chart.investor_cash("nobody", "EUR").id, chart.world("EUR").id]) == {}


def test_a_deposit_that_would_overflow_a_running_total_is_refused_and_changes_nothing(
    service: LedgerService,
) -> None:
    service.deposit("alice", Money(2**62, "EUR"), "big")
    with pytest.raises(AmountOverflowError) as caught:
        service.deposit("bob", Money(2**62, "EUR"), "bigger")
    assert caught.value.field == "amount" and "world" not in caught.value.message
    with pytest.raises(AmountOverflowError):
        service.deposit("bob", Money(2**63, "EUR"), "too-big")
    assert available(service, "bob") == 0 and available(service, "alice") == 2**62


def test_every_change_of_available_cash_outside_a_reservation_is_announced(
    service: LedgerService, engine: Engine
) -> None:
    service.deposit("ann", eur("100.00"), "d")
    service.reserve([matched(bid("b1", "ann", 4_000), bid("b2", "ann", 1_000))])
    service.fund(LoanFunded("lender1", "L1", 1, "EUR", ("b1",)))
    service.roll_back(BidsRolledBack("lender1", "L1", "partial", ("b2",)))
    service.settle_loan(loan(290_000, (1_000, 100)))
    service.withdraw("ann", eur("10.00"), "w")
    published = [t for t, kind in outbox(engine) if kind == "CashAvailable"]
    # deposit, roll-back, repayment, withdrawal: not the reservation nor the funding
    assert published == ["investor.ann.cash"] * 4


def test_funding_moves_the_reserved_cash_to_the_lender_and_a_roll_back_releases_it(
    service: LedgerService,
) -> None:
    service.deposit("alice", eur("1000.00"), "d")
    service.reserve([matched(bid("b1", "alice", 40_000), bid("b2", "alice", 10_000))])
    assert available(service, "alice") == 50_000
    funded = service.fund(LoanFunded("lender1", "L1", 1, "EUR", ("b1",)))
    assert funded.done == ("b1",)
    assert balance(service, chart.lender_settlement("lender1", "EUR").id) == 40_000
    assert balance(service, "hold:b1") == 40_000
    rolled = service.roll_back(BidsRolledBack("lender1", "L1", "partial", ("b2", "never-reserved")))
    assert rolled.done == ("b2", "never-reserved")
    assert available(service, "alice") == 60_000
    assert service.fund(LoanFunded("lender1", "L1", 1, "EUR", ("b1",))).done == ("b1",)  # replay
    assert balance(service, "hold:b1") == 40_000
    assert service.store.net_by_currency() == {"EUR": (0, 0)}


def test_funding_a_bid_the_ledger_never_reserved_is_refused_naming_it(service: LedgerService) -> None:
    outcome = service.fund(LoanFunded("lender1", "L1", 1, "EUR", ("ghost",)))
    assert isinstance(outcome.refused["ghost"], ReservationNotFoundError)


def test_a_repayment_of_100_euros_among_three_equal_holders_pays_33_34_33_33_33_33(
    service: LedgerService,
) -> None:
    fund(service, bid("b1", "ann", 100_000), bid("b2", "ben", 100_000), bid("b3", "cy", 100_000))
    service.settle_loan(loan(290_000, (10_000, 0)))
    assert [available(service, who) for who in ("ann", "ben", "cy")] == [3_334, 3_333, 3_333]
    assert [balance(service, f"hold:b{i}") for i in (1, 2, 3)] == [96_666, 96_667, 96_667]
    assert balance(service, chart.lender_settlement("lender1", "EUR").id) == 300_000 - 10_000


def test_interest_goes_to_holders_less_the_platform_margin(service: LedgerService) -> None:
    fund(service, bid("b1", "ann", 150_000, rate="0.08"), bid("b2", "ben", 150_000, rate="0.10"))
    service.settle_loan(loan(300_000, (0, 2_500)))
    assert available(service, "ann") == 1_000  # 1250 * 8/10
    assert available(service, "ben") == 1_250
    assert balance(service, chart.platform_revenue("EUR").id) == 250


def test_settling_a_version_twice_changes_nothing(service: LedgerService) -> None:
    fund(service, bid("b1", "ann", 300_000))
    first = service.settle_loan(loan(250_000, (50_000, 2_000)))
    again = service.settle_loan(loan(250_000, (50_000, 2_000)))
    assert first.transfers == 3 and again.skipped
    assert available(service, "ann") == 52_000
    assert balance(service, "hold:b1") == 250_000


def test_a_written_off_loan_turns_the_remaining_holdings_into_losses(service: LedgerService) -> None:
    fund(service, bid("b1", "ann", 200_000), bid("b2", "ben", 100_000))
    service.settle_loan(loan(240_000, (60_000, 0), status="written_off"))
    assert balance(service, "hold:b1") == 0 and balance(service, "hold:b2") == 0
    assert available(service, "ann") == 40_000 and available(service, "ben") == 20_000
    write_offs = service.store.transfers(["wo:lender1:L1:b1", "wo:lender1:L1:b2"])
    assert {t.amount for t in write_offs.values()} == {160_000, 80_000}
    assert balance(service, chart.loan_principal("lender1", "L1", "EUR").id) == 0
    rows = {r.bid_id: r for r, _ in service.store.holdings_with_balance(investor_id="ann")}
    assert (rows["b1"].status, rows["b1"].written_off) == ("written_off", 160_000)
    assert service.store.net_by_currency() == {"EUR": (0, 0)}


def test_fills_and_repayments_notify_each_portfolio_once_per_window(engine: Engine) -> None:
    clock = ManualClock()
    service = LedgerService(SqlLedgerStore(engine, clock), clock, drift_window=timedelta(seconds=30))
    fund(service, *(bid(f"b{i}", "ann", 1_000, portfolio="pf-a") for i in range(20)), bid("x", "ben", 5_000))
    service.settle_loan(loan(290_000, (1_000, 100)))
    assert service.publish_due_drift() == 0
    clock.advance(timedelta(seconds=30))
    assert service.publish_due_drift() == 2
    drifted = [t for t, kind in outbox(engine) if kind == "PortfolioDrifted"]
    assert drifted == ["portfolio.pf-a.drifted", "portfolio.pf-ben.drifted"]
    assert service.publish_due_drift() == 0


def test_payments_on_tapes_up_to_the_funded_version_are_not_the_holders(service: LedgerService) -> None:
    service.deposit("ann", eur("3000.00"), "d")
    service.reserve([matched(bid("b1", "ann", 300_000), version=3)])
    service.fund(LoanFunded("lender1", "L1", 3, "EUR", ("b1",)))
    assert service.settle_loan(loan(300_000, (0, 500), version=3)).skipped
    assert service.settle_loan(loan(290_000, (10_000, 500), version=4)).transfers == 3
    assert available(service, "ann") == 10_500


def test_reservations_that_time_out_are_voided_and_their_bids_expire(engine: Engine) -> None:
    clock = ManualClock()
    service = LedgerService(SqlLedgerStore(engine, clock), clock, reservation_timeout=timedelta(minutes=5))
    service.deposit("ann", eur("100.00"), "d")
    service.reserve([matched(bid("b1", "ann", 6_000))])
    assert service.expire_reservations() == 0
    clock.advance(timedelta(minutes=5))
    assert service.expire_reservations() == 2  # the cash and the holding
    assert available(service, "ann") == 10_000
    [(row, _)] = service.store.holdings_with_balance(investor_id="ann")
    assert row.status == "expired"
    again = service.reserve([matched(bid("b1", "ann", 6_000))])
    assert [r.code for r in again.refused] == ["bid_closed"]
    assert CashAvailable("ann", "EUR", 10_000).topic == "investor.ann.cash"
