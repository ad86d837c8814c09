"""Matching's events reach the ledger over the bus and settle once, however often they are delivered."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from tranche.bus.codec import EventCodec
from tranche.bus.memory import InProcessBus
from tranche.ledger import chart
from tranche.ledger.errors import ReservationNotFoundError
from tranche.ledger.handlers import LedgerHandlers, matching_subscriber
from tranche.ledger.service import LedgerService
from tranche.matching import Bid, BidsRolledBack, LoanFunded, OfferMatched
from tranche.shared.clock import ManualClock
from tranche.shared.money import Money


def test_matching_events_from_the_bus_reserve_post_and_void_cash_once(engine: Engine) -> None:
    service = LedgerService(engine, ManualClock())
    service.deposit("ann", Money(10_000, "EUR"), "d")
    codec = EventCodec(OfferMatched, LoanFunded, BidsRolledBack)
    bids = tuple(
        Bid(f"b{i}", "buy", "pf", "ann", 3_000, Decimal("0.1"), Decimal("0.1"), Decimal(0)) for i in (1, 2)
    )
    events = [
        OfferMatched("m1", "len", "L1", 1, "EUR", False, bids),
        LoanFunded("len", "L1", 1, "EUR", ("b1",)),
        BidsRolledBack("len", "L1", "partial", ("b2",)),
    ]

    async def run() -> None:
        async with InProcessBus() as bus:
            await matching_subscriber(LedgerHandlers(service), codec, "matching.#")(bus)
            for event in [*events, *events]:  # every event delivered twice
                await bus.publish(codec.to_message(event, "matching.len.event"))
            for _ in range(200):
                if service.store.account(chart.investor_cash("ann", "EUR").id).debits_pending == 0 and (
                    service.store.transfers(["bid:b2:holding:void"])
                ):
                    break
                await asyncio.sleep(0.02)

    asyncio.run(run())
    cash = service.store.account(chart.investor_cash("ann", "EUR").id)
    assert (cash.balance, cash.available) == (7_000, 7_000)
    assert service.store.account("hold:b1").balance == 3_000
    assert service.store.net_by_currency() == {"EUR": (0, 0)}


def test_a_funding_that_overtakes_its_match_is_refused_so_that_it_is_delivered_again(engine: Engine) -> None:
    service = LedgerService(engine, ManualClock())
    handlers = LedgerHandlers(service)
    service.deposit("ann", Money(10_000, "EUR"), "d")
    bid = Bid("b1", "buy", "pf", "ann", 3_000, Decimal("0.1"), Decimal("0.1"), Decimal(0))
    funded = LoanFunded("len", "L1", 1, "EUR", ("b1",))
    with pytest.raises(ReservationNotFoundError):
        handlers.handle(funded)
    handlers.handle(OfferMatched("m1", "len", "L1", 1, "EUR", False, (bid,)))
    assert handlers.handle(funded).done == ("b1",)
    assert service.store.account("hold:b1").balance == 3_000
