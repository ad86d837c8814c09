"""Reserve, then confirm: the ledger reserves what the market asks, bid by bid or all or nothing, once, and a
refusal leaves nothing behind; on SQLite and PostgreSQL, and over the bus (in-process and RabbitMQ)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_examples import available, bid, eur, matched
from sqlalchemy import Engine

from tranche.bus import Bus, EventCodec
from tranche.ledger import (
    CashPosition,
    HoldingStatus,
    InMemoryLedgerStore,
    LedgerReports,
    LedgerService,
    ReserveBids,
    SqlLedgerStore,
    chart,
    request_reservations,
    serve_reservations,
)
from tranche.matching import BidsRolledBack, LoanFunded
from tranche.shared.clock import ManualClock
from tranche.shared.money import Money


@pytest.fixture
def service(engine: Engine) -> LedgerService:
    return LedgerService(SqlLedgerStore(engine, ManualClock()), ManualClock())


def holdings(service: LedgerService, investor: str) -> dict[str, str]:
    return {r.bid_id: r.status for r, _ in service.store.holdings_with_balance(investor_id=investor)}


def test_each_bid_of_a_partial_funding_match_is_reserved_alone(service: LedgerService) -> None:
    service.deposit("ann", eur("100.00"), "d")
    service.deposit("ben", eur("50.00"), "d")
    answer = service.reserve(
        [matched(bid("b1", "ann", 6_000), bid("b2", "ann", 6_000), bid("b3", "ben", 5_000))], request_id="r1"
    )
    assert answer.request_id == "r1"
    assert answer.reserved == ("b1", "b3")
    [refusal] = answer.refused
    assert (refusal.bid_id, refusal.investor_id, refusal.code) == ("b2", "ann", "insufficient_cash")
    assert "investor ann has 40.00 EUR available" in refusal.message and "60.00 EUR" in refusal.message
    assert answer.cash == (CashPosition("ann", "EUR", 4_000), CashPosition("ben", "EUR", 0))
    assert holdings(service, "ann") == {"b1": "reserved"}
    assert service.store.accounts(["hold:b2"]) == {}


def test_the_bids_of_an_all_or_nothing_match_are_reserved_all_or_none(service: LedgerService) -> None:
    service.deposit("ann", eur("100.00"), "d")
    service.deposit("ben", eur("50.00"), "d")
    aon = matched(bid("b1", "ann", 10_000), bid("b2", "ben", 5_001), loan="AON", all_or_nothing=True)
    answer = service.reserve([aon])
    assert answer.reserved == ()
    assert [(r.bid_id, r.code) for r in answer.refused] == [
        ("b1", "all_or_nothing"),
        ("b2", "insufficient_cash"),
    ]
    assert "bid b2" in answer.refused[0].message
    assert (available(service, "ann"), available(service, "ben")) == (10_000, 5_000)
    assert (
        service.store.accounts(["hold:b1", "hold:b2", chart.loan_principal("lender1", "AON", "EUR").id]) == {}
    )
    service.deposit("ben", eur("0.01"), "more")
    assert service.reserve([aon]).reserved == ("b1", "b2")  # asked again once the cash is there


def test_a_bid_already_reserved_answers_reserved_and_changes_nothing(service: LedgerService) -> None:
    service.deposit("ann", eur("100.00"), "d")
    first = service.reserve([matched(bid("b1", "ann", 7_000))])
    again = service.reserve([matched(bid("b1", "ann", 7_000))])
    assert first.reserved == again.reserved == ("b1",)
    assert again.cash == (CashPosition("ann", "EUR", 3_000),)
    service.fund(LoanFunded("lender1", "L1", 1, "EUR", ("b1",)))
    assert service.reserve([matched(bid("b1", "ann", 7_000))]).reserved == ("b1",)
    assert available(service, "ann") == 3_000


def test_the_cash_and_holdings_the_market_plans_with_are_one_query_each(service: LedgerService) -> None:
    service.deposit("ann", eur("100.00"), "d")
    service.deposit("ann", Money(500, "PLN"), "d-pln")
    service.reserve(
        [matched(bid("b1", "ann", 6_000, portfolio="pf1"), bid("b2", "ann", 1_000, portfolio="pf2"))]
    )
    service.fund(LoanFunded("lender1", "L1", 1, "EUR", ("b1",)))
    reports = LedgerReports(service.store)
    assert reports.available_cash("ann") == (
        CashPosition("ann", "EUR", 3_000),
        CashPosition("ann", "PLN", 500),
    )
    assert reports.available_cash_of(["ann", "nobody"], "EUR") == {"ann": 3_000, "nobody": 0}
    held = reports.portfolio_holdings(["pf1", "pf2"])
    assert [(h.bid_id, h.portfolio_id, h.status, h.invested, h.held) for h in held] == [
        ("b1", "pf1", "active", 6_000, 6_000),
        ("b2", "pf2", "reserved", 1_000, 0),
    ]
    assert held[0].investor_rate == Decimal("0.10") and held[0].loan_id == "L1"


def test_a_rolled_back_bid_is_never_reserved_again(service: LedgerService) -> None:
    service.deposit("ann", eur("100.00"), "d")
    service.reserve([matched(bid("b1", "ann", 7_000))])
    service.roll_back(BidsRolledBack("lender1", "L1", "loan changed", ("b1",)))
    answer = service.reserve([matched(bid("b1", "ann", 7_000))])
    assert [(r.bid_id, r.code) for r in answer.refused] == [("b1", "bid_closed")]
    assert available(service, "ann") == 10_000


def test_an_investor_without_cash_is_refused_and_gets_no_account(service: LedgerService) -> None:
    answer = service.reserve([matched(bid("b1", "nobody", 100))])
    assert [r.code for r in answer.refused] == ["insufficient_cash"]
    assert answer.cash == (CashPosition("nobody", "EUR", 0),)
    assert service.store.accounts([chart.investor_cash("nobody", "EUR").id, "hold:b1"]) == {}
    assert service.store.holdings_with_balance(investor_id="nobody") == []


def test_a_cash_short_investor_gets_one_loan_and_no_part_of_an_all_or_nothing_loan(
    service: LedgerService,
) -> None:
    """The market of issue #13: 100.00 EUR of cash, ten loans of 100.00 and an all-or-nothing loan of 200.00."""
    service.deposit("ann", eur("100.00"), "d")
    matches = [matched(bid(f"b{n}", "ann", 10_000), loan=f"L{n}") for n in range(10)]
    matches.append(
        matched(bid("a1", "ann", 10_000), bid("a2", "ann", 10_000), loan="AON", all_or_nothing=True)
    )
    answer = service.reserve(matches)
    assert answer.reserved == ("b0",)
    assert {r.bid_id for r in answer.refused} == {*(f"b{n}" for n in range(1, 10)), "a1", "a2"}
    assert answer.cash == (CashPosition("ann", "EUR", 0),)
    assert holdings(service, "ann") == {"b0": HoldingStatus.RESERVED}


@pytest.mark.anyio
async def test_the_market_reserves_through_the_bus(bus: Bus, engine: Engine) -> None:
    service = LedgerService(SqlLedgerStore(engine, ManualClock()), ManualClock())
    service.deposit("ann", eur("100.00"), "d")
    served = await serve_reservations(bus, EventCodec(), service)
    try:
        command = ReserveBids("cycle-1", (matched(bid("b1", "ann", 6_000), bid("b2", "ann", 6_000)),))
        answer = await request_reservations(bus, EventCodec(), command, timeout=20)
        again = await request_reservations(bus, EventCodec(), command, timeout=20)
    finally:
        await served.cancel()
    assert (answer.request_id, answer.reserved, [r.code for r in answer.refused]) == (
        "cycle-1",
        ("b1",),
        ["insufficient_cash"],
    )
    assert answer.cash == again.cash == (CashPosition("ann", "EUR", 4_000),)


requests = st.lists(
    st.lists(
        st.tuples(
            st.booleans(),  # all or nothing
            st.lists(
                st.tuples(st.sampled_from(["ann", "ben", "cy"]), st.integers(1, 6_000)),
                min_size=1,
                max_size=3,
            ),
        ),
        min_size=1,
        max_size=4,
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=3, max_size=3), requests, st.data())
def test_reserved_cash_never_exceeds_what_investors_deposited_and_aon_matches_are_whole(
    deposits: list[int], batches: list[list[tuple[bool, list[tuple[str, int]]]]], data: st.DataObject
) -> None:
    clock = ManualClock()
    service = LedgerService(InMemoryLedgerStore(clock), clock)
    for investor, amount in zip(["ann", "ben", "cy"], deposits, strict=True):
        if amount:
            service.deposit(investor, eur(f"{amount / 100:.2f}"), "d")
    asked: list[object] = []
    serial = 0
    for number, batch in enumerate(batches):
        matches = []
        for index, (aon, wanted) in enumerate(batch):
            bids = []
            for investor, amount in wanted:
                serial += 1
                bids.append(bid(f"x{serial}", investor, amount))
            matches.append(matched(*bids, loan=f"L{number}-{index}", all_or_nothing=aon))
        if asked and data.draw(st.booleans()):
            matches.append(data.draw(st.sampled_from(asked)))  # asked again: answers as before
        answer = service.reserve(matches)
        reserved = set(answer.reserved)
        for match in matches:
            if match.all_or_nothing:
                got = {b.bid_id in reserved for b in match.bids}
                assert len(got) == 1, "an all-or-nothing match is reserved whole or not at all"
        assert reserved.isdisjoint(r.bid_id for r in answer.refused)
        asked += matches
        for position in answer.cash:
            assert position.available >= 0
    for investor, amount in zip(["ann", "ben", "cy"], deposits, strict=True):
        held = sum(r.amount for r, _ in service.store.holdings_with_balance(investor_id=investor))
        assert held + available(service, investor) == amount
    assert service.store.net_by_currency() in ({}, {"EUR": (0, 0)})
