"""The embedded bus confirms a publish once every durable group has handled the message, so the outbox keeps
what a crash would lose from the process's queues."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine

from tranche.bus import BusClosedError, InProcessBus, Message, QueueSpec, connect
from tranche.bus.outbox import OutboxRelay, add_to_outbox, unpublished_count

pytestmark = pytest.mark.anyio


def event(topic: str = "loan.acme.listed") -> Message:
    return Message(body=b"{}", routing_key=topic, type="Thing")


async def test_a_publish_returns_once_the_group_has_handled_the_message() -> None:
    seen: list[str] = []

    async def slow(message: Message) -> None:
        await asyncio.sleep(0.05)
        seen.append("handled")

    async with InProcessBus(confirm_handled=True) as bus:
        await bus.subscribe("loan.#", slow, group="market")
        await bus.publish(event())
        seen.append("confirmed")
    assert seen == ["handled", "confirmed"]


async def test_the_embedded_deployments_bus_confirms_once_handled() -> None:
    bus = connect("memory://")
    assert isinstance(bus, InProcessBus) and bus.confirm_handled


async def test_a_message_dead_lettered_past_its_delivery_limit_is_confirmed() -> None:
    async def failing(message: Message) -> None:
        raise RuntimeError("no")

    async with InProcessBus(confirm_handled=True) as bus:
        await bus.subscribe("loan.#", failing, group="g", spec=QueueSpec(max_deliveries=2))
        await asyncio.wait_for(bus.publish(event()), 5)
        assert len(await bus.dead_letters("g")) == 1


async def test_a_private_subscription_does_not_hold_a_publish_back() -> None:
    blocked = asyncio.Event()

    async def never(message: Message) -> None:
        await blocked.wait()

    async with InProcessBus(confirm_handled=True) as bus:
        await bus.subscribe("loan.#", never)
        await asyncio.wait_for(bus.publish(event()), 1)
        blocked.set()


async def test_closing_the_bus_fails_a_publish_still_waiting_for_its_handler() -> None:
    blocked = asyncio.Event()

    async def never(message: Message) -> None:
        await blocked.wait()

    bus = InProcessBus(confirm_handled=True)
    await bus.start()
    await bus.subscribe("loan.#", never, group="g")
    waiting = asyncio.create_task(bus.publish(event()))
    await asyncio.sleep(0.05)
    await bus.close()
    with pytest.raises(BusClosedError):
        await waiting


async def test_a_relayed_event_not_yet_handled_when_the_process_stops_stays_in_the_outbox(
    engine: Engine,
) -> None:
    blocked = asyncio.Event()

    async def stuck(message: Message) -> None:
        await blocked.wait()

    with engine.begin() as conn:
        add_to_outbox(conn, "loan.acme.listed", Message(body=b"{}", type="Thing"))
    bus = InProcessBus(confirm_handled=True)
    await bus.start()
    await bus.subscribe("loan.#", stuck, group="market")
    relay = OutboxRelay(engine, bus)
    running = asyncio.create_task(relay.run_once())
    await asyncio.sleep(0.1)
    running.cancel()  # the process stops while the market still works on the event
    with pytest.raises(asyncio.CancelledError):
        await running
    await bus.close()
    with engine.connect() as conn:
        assert unpublished_count(conn) == 1  # relayed again after the restart
