"""The outbox and the inbox, on SQLite and PostgreSQL, relayed through the in-process bus."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError

from tranche.bus import BusClosedError, EventCodec, InProcessBus, Message
from tranche.bus.outbox import (
    OutboxRelay,
    add_to_outbox,
    already_handled,
    handle_once,
    mark_handled,
    unpublished_count,
)
from tranche.bus.tables import bus_outbox

pytestmark = pytest.mark.anyio


@dataclass(frozen=True, slots=True)
class LoanListed:
    loan_id: str
    rate: Decimal
    listed_on: date


codec = EventCodec(LoanListed)


async def collect(bus: InProcessBus, pattern: str) -> list[Message]:
    got: list[Message] = []

    async def handler(message: Message) -> None:
        got.append(message)

    await bus.subscribe(pattern, handler)
    return got


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_relay_publishes_committed_events_in_order_and_marks_them(engine: Engine) -> None:
    with engine.begin() as conn:
        ids = [
            add_to_outbox(
                conn, f"loan.L{i}.listed", LoanListed(f"L{i}", Decimal("0.0725"), date(2026, 3, i + 1))
            )
            for i in range(20)
        ]
    async with InProcessBus() as bus:
        got = await collect(bus, "loan.*.listed")
        assert await OutboxRelay(engine, bus, batch_size=7).drain() == 20
        await settle()
    assert [m.message_id for m in got] == ids
    assert codec.from_message(got[3]) == LoanListed("L3", Decimal("0.0725"), date(2026, 3, 4))
    with engine.connect() as conn:
        assert unpublished_count(conn) == 0
        published = conn.execute(select(bus_outbox.c.published_at)).scalars().all()
    assert all(moment is not None for moment in published)


async def test_an_event_of_a_rolled_back_transaction_is_never_published(engine: Engine) -> None:
    with pytest.raises(RuntimeError), engine.begin() as conn:
        add_to_outbox(conn, "loan.L1.listed", LoanListed("L1", Decimal("0.05"), date(2026, 1, 1)))
        raise RuntimeError("the state change failed")
    async with InProcessBus() as bus:
        assert await OutboxRelay(engine, bus).drain() == 0


async def test_events_wait_in_the_outbox_while_the_bus_is_down(engine: Engine) -> None:
    with engine.begin() as conn:
        add_to_outbox(conn, "loan.L1.listed", LoanListed("L1", Decimal("0.05"), date(2026, 1, 1)))
    bus = InProcessBus()
    with pytest.raises(BusClosedError):
        await OutboxRelay(engine, bus).run_once()
    with engine.connect() as conn:
        assert unpublished_count(conn) == 1
    async with bus:
        got = await collect(bus, "loan.#")
        assert await OutboxRelay(engine, bus).drain() == 1
        await settle()
    assert len(got) == 1


async def test_a_running_relay_rides_out_an_outage_and_stops_when_told(engine: Engine) -> None:
    bus = InProcessBus()
    relay = OutboxRelay(engine, bus, poll_interval=0.01, retry_interval=0.01)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    with engine.begin() as conn:
        add_to_outbox(conn, "loan.L1.listed", LoanListed("L1", Decimal("0.05"), date(2026, 1, 1)))
    await asyncio.sleep(0.1)
    assert relay.failures > 0 and relay.published == 0
    await bus.start()
    got = await collect(bus, "loan.#")
    for _ in range(200):
        if got:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(running, 2)
    await bus.close()
    assert len(got) == 1


def test_a_ready_message_keeps_its_id_type_and_headers_in_the_outbox(engine: Engine) -> None:
    message = Message(b'{"x":1}', type="Thing", headers={"tenant": "t1"})
    with engine.begin() as conn:
        event_id = add_to_outbox(conn, "thing.done", message)
        row = conn.execute(select(bus_outbox)).one()
    assert event_id == message.message_id == row.event_id
    assert (row.type, bytes(row.payload), row.headers) == ("Thing", b'{"x":1}', '{"tenant": "t1"}')


def test_marking_one_event_twice_for_one_consumer_is_refused(engine: Engine) -> None:
    with engine.begin() as conn:
        mark_handled(conn, "ledger", "evt_1")
        mark_handled(conn, "feedback", "evt_1")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        mark_handled(conn, "ledger", "evt_1")
    with engine.connect() as conn:
        assert already_handled(conn, "ledger", "evt_1")
        assert not already_handled(conn, "ledger", "evt_2")


def test_an_effect_that_fails_leaves_the_event_unhandled(engine: Engine) -> None:
    def broken(conn: Connection) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        handle_once(engine, "ledger", "evt_9", broken)
    applied: list[str] = []
    assert handle_once(engine, "ledger", "evt_9", lambda conn: applied.append("evt_9"))
    assert applied == ["evt_9"]


_runs = iter(range(1_000_000))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(deliveries=st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=40))
def test_redelivered_events_have_exactly_one_effect(engine: Engine, deliveries: list[int]) -> None:
    consumer = f"consumer-{next(_runs)}"
    applied: Counter[str] = Counter()
    for n in deliveries:
        event_id = f"evt_{n}"
        handle_once(engine, consumer, event_id, lambda conn, e=event_id: applied.update([e]))
    assert applied == Counter({f"evt_{n}": 1 for n in set(deliveries)})
