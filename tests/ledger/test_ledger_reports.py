"""Statements, holdings, net annual return (checked against pyxirr) and lender settlement by day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import pyxirr
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from tranche.ledger import LedgerReports, LedgerService, LoanVersion, Payment, SqlLedgerStore
from tranche.ledger.returns import xirr
from tranche.matching import Bid, LoanFunded, OfferMatched
from tranche.shared.clock import ManualClock
from tranche.shared.money import Money

START = datetime(2026, 1, 1, 9, tzinfo=UTC)


def test_xirr_of_a_year_at_ten_percent_is_ten_percent() -> None:
    assert xirr([(date(2025, 1, 1), -10_000), (date(2026, 1, 1), 11_000)]) == Decimal("0.1")


def test_xirr_is_none_without_flows_of_both_signs() -> None:
    assert xirr([(date(2025, 1, 1), -10_000)]) is None
    assert xirr([]) is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1500), st.integers(-(10**7), -100)), min_size=1, max_size=6),
    st.integers(30, 2000),
    st.integers(50, 200),
)
def test_xirr_agrees_with_pyxirr(outs: list[tuple[int, int]], horizon: int, percent_back: int) -> None:
    first = date(2024, 1, 1)
    put_in = sum(-a for _, a in outs)
    last = max(d for d, _ in outs) + horizon
    flows = [(first + timedelta(days=d), a) for d, a in outs] + [
        (first + timedelta(days=last), put_in * percent_back // 100)
    ]
    ours = xirr(flows)
    theirs = pyxirr.xirr([d for d, _ in flows], [a for _, a in flows])
    assert ours is not None
    if theirs is None:
        # pyxirr's solver gives up on some returns close to -100%; ours must still be a root of the NPV.
        terms = [a * (1 + float(ours)) ** -((d - first).days / 365) for d, a in flows]
        assert abs(sum(terms)) <= 1e-6 * sum(abs(t) for t in terms)
        return
    assert abs(float(ours) - theirs) < 1e-6 * max(1.0, abs(theirs))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def service(engine: Engine, clock: ManualClock) -> LedgerService:
    return LedgerService(SqlLedgerStore(engine, clock), clock)


def reports(service: LedgerService) -> LedgerReports:
    return LedgerReports(service.store)


def invest(service: LedgerService, clock: ManualClock) -> None:
    """ann deposits 1000, funds 600 of a 1000 EUR loan; a day later the loan pays 100 + 5 and she withdraws."""
    service.deposit("ann", Money(100_000, "EUR"), "d1")
    bid = Bid("b1", "buy", "pf", "ann", 60_000, Decimal("0.10"), Decimal("0.10"), Decimal(0))
    service.reserve([OfferMatched("m", "len", "L1", 1, "EUR", False, (bid,))])
    service.fund(LoanFunded("len", "L1", 1, "EUR", ("b1",)))
    clock.advance(timedelta(days=1))
    service.settle_loan(LoanVersion("len", "L1", 2, "EUR", "active", 90_000, (Payment(10_000, 500),)))
    service.withdraw("ann", Money(1_000, "EUR"), "w1")


def test_a_statement_lists_every_movement_in_chunks_between_its_balances(
    engine: Engine, service: LedgerService, clock: ManualClock
) -> None:
    invest(service, clock)
    statement = reports(service).statement("ann", "EUR", chunk_size=2)
    chunks = list(statement)
    movements = [m for chunk in chunks for m in chunk]
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert [(m.code, m.amount) for m in movements] == [
        ("deposit", 100_000),
        ("funding", -60_000),
        ("interest", 300),
        ("principal", 6_000),
        ("withdrawal", -1_000),
    ]
    assert statement.opening == 0 and statement.closing == movements[-1].balance == 45_300
    later = reports(service).statement("ann", "EUR", start=START + timedelta(hours=1))
    assert later.opening == 40_000 and later.closing == 45_300
    assert [m.code for chunk in later for m in chunk] == ["interest", "principal", "withdrawal"]


def test_holdings_show_the_principal_still_held_per_loan(
    engine: Engine, service: LedgerService, clock: ManualClock
) -> None:
    invest(service, clock)
    [holding] = reports(service).holdings("ann")
    assert (holding.loan_id, holding.held_principal, holding.invested) == ("L1", 54_000, 60_000)
    assert holding.loan_outstanding_principal == 90_000 and holding.written_off == 0


def test_net_annual_return_values_cash_and_principal_held(
    engine: Engine, service: LedgerService, clock: ManualClock
) -> None:
    invest(service, clock)
    as_of = START + timedelta(days=365)
    ours = reports(service).net_annual_return("ann", "EUR", as_of)
    flows = [(date(2026, 1, 1), -100_000), (date(2026, 1, 2), 1_000), (as_of.date(), 45_300 + 54_000)]
    theirs = pyxirr.xirr([d for d, _ in flows], [a for _, a in flows])
    assert ours is not None and abs(float(ours) - theirs) < 1e-9


def test_the_lender_settlement_report_has_one_row_per_day(
    engine: Engine, service: LedgerService, clock: ManualClock
) -> None:
    invest(service, clock)
    service.pay_out_lender("len", Money(20_000, "EUR"), "p1")
    days = reports(service).lender_settlement("len", "EUR")
    assert [d.day for d in days] == [date(2026, 1, 1), date(2026, 1, 2)]
    assert (days[0].funded, days[0].closing) == (60_000, 60_000)
    assert (days[1].principal_paid, days[1].interest_paid, days[1].payouts) == (6_000, 300, 20_000)
    assert days[1].closing == 60_000 - 6_300 - 20_000


def test_a_write_off_counts_as_a_loss_in_the_net_annual_return(
    service: LedgerService, clock: ManualClock
) -> None:
    invest(service, clock)  # 600 in L1, of which 540 still held
    as_of = START + timedelta(days=365)
    before = reports(service).net_annual_return("ann", "EUR", as_of)
    service.settle_loan(LoanVersion("len", "L1", 3, "EUR", "written_off", 90_000))
    after = reports(service).net_annual_return("ann", "EUR", as_of)
    [holding] = reports(service).holdings("ann")
    assert (holding.held_principal, holding.written_off, holding.loan_status) == (0, 54_000, "written_off")
    flows = [(date(2026, 1, 1), -100_000), (date(2026, 1, 2), 1_000), (as_of.date(), 45_300)]
    theirs = pyxirr.xirr([d for d, _ in flows], [a for _, a in flows])
    assert before is not None and after is not None and after < 0 < before
    assert abs(float(after) - theirs) < 1e-9


def test_money_put_in_of_which_nothing_is_left_is_a_return_of_minus_one(
    service: LedgerService, clock: ManualClock
) -> None:
    service.deposit("ann", Money(60_000, "EUR"), "d1")
    bid = Bid("b1", "buy", "pf", "ann", 60_000, Decimal("0.10"), Decimal("0.10"), Decimal(0))
    service.reserve([OfferMatched("m", "len", "L1", 1, "EUR", False, (bid,))])
    service.fund(LoanFunded("len", "L1", 1, "EUR", ("b1",)))
    service.settle_loan(LoanVersion("len", "L1", 2, "EUR", "written_off", 60_000))
    assert reports(service).net_annual_return("ann", "EUR", START + timedelta(days=30)) == Decimal(-1)
    assert reports(service).net_annual_return("nobody", "EUR", START) is None
