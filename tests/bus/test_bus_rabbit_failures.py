"""Failures only a real broker shows: a consumer process killed outright, and the broker restarting while
events flow from the outbox to an idempotent consumer."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine

from tranche.bus import Delivery, Message, QueueSpec
from tranche.bus.outbox import OutboxRelay, add_to_outbox, handle_once, unpublished_count
from tranche.bus.rabbit import RabbitBus
from tranche.store.engine import create_store_engine
from tranche.store.migrate import upgrade
from tranche.testing.rabbitmq import RabbitNode

pytestmark = [pytest.mark.anyio, pytest.mark.rabbitmq]

# A consumer that takes tasks and never acks them, printing the id of each one it holds.
HOLDER = """
import asyncio, sys
from tranche.bus.rabbit import RabbitBus

async def main(url: str, queue: str) -> None:
    bus = RabbitBus(url)
    await bus.start()

    async def hold(delivery):
        print(delivery.message.message_id, flush=True)
        await asyncio.Event().wait()

    await bus.consume_tasks(queue, hold, prefetch=5)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_tasks_held_by_a_killed_consumer_process_reach_another_consumer(rabbit_url: str) -> None:
    queue = f"kill-{uuid.uuid4().hex[:8]}"
    async with RabbitBus(rabbit_url) as bus:
        await bus.declare_queue(queue, QueueSpec(max_deliveries=5))
        sent = [Message.of_json({"task": i}) for i in range(8)]
        for message in sent:
            await bus.send_task(queue, message)

        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", HOLDER, rabbit_url, queue, stdout=asyncio.subprocess.PIPE
        )
        assert child.stdout is not None
        held = set()
        try:
            while len(held) < 5:
                line = await asyncio.wait_for(child.stdout.readline(), 30)
                assert line, "the consumer process exited early"
                held.add(line.decode().strip())
        except BaseException:
            child.kill()
            raise

        received: dict[str, bool] = {}

        async def work(delivery: Delivery) -> None:
            received[delivery.message.message_id] = delivery.redelivered

        await bus.consume_tasks(queue, work, prefetch=10)
        deadline = time.monotonic() + 10
        while len(received) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert set(received) == {m.message_id for m in sent} - held, "only the tasks not held reach us"

        os.kill(child.pid, signal.SIGKILL)
        await child.wait()
        deadline = time.monotonic() + 10
        while len(received) < 8 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert set(received) == {m.message_id for m in sent}
        assert all(received[task] for task in held), "the held tasks come back marked redelivered"


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'flow.db'}")
    upgrade(engine)
    return engine


async def test_a_broker_restart_while_events_flow_loses_none_and_applies_none_twice(
    rabbit_node: RabbitNode, sqlite_engine: Engine
) -> None:
    engine = sqlite_engine
    group = f"applier-{uuid.uuid4().hex[:8]}"
    applied: Counter[str] = Counter()
    deliveries: Counter[str] = Counter()

    async def apply(message: Message) -> None:
        deliveries[message.message_id] += 1

        def effect(conn: Connection) -> None:
            applied[message.message_id] += 1

        await asyncio.to_thread(handle_once, engine, group, message.message_id, effect)

    consumer_bus = RabbitBus(rabbit_node.url, reconnect_interval=0.5)
    producer_bus = RabbitBus(rabbit_node.url, reconnect_interval=0.5, publish_timeout=5)
    await consumer_bus.start()
    await producer_bus.start()
    relay = OutboxRelay(engine, producer_bus, batch_size=20, poll_interval=0.02, retry_interval=0.3)
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop))
    written: list[str] = []
    try:
        await consumer_bus.subscribe("loan.*.listed", apply, group=group, prefetch=20)

        def write_ten() -> None:
            with engine.begin() as conn:
                written.extend(
                    add_to_outbox(conn, f"loan.L{len(written) + i}.listed", Message.of_json({"n": i}))
                    for i in range(10)
                )

        for _ in range(10):
            write_ten()
        while len(applied) < 50:
            await asyncio.sleep(0.01)
        # The broker goes away and comes back (a full stop and start of the node) while events are written.
        restarting = asyncio.create_task(asyncio.to_thread(rabbit_node.restart))
        while not restarting.done():
            write_ten()
            await asyncio.sleep(0.05)
        await restarting
        for _ in range(10):
            write_ten()
            await asyncio.sleep(0.01)

        deadline = time.monotonic() + 60
        while len(applied) < len(written) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(relaying, 10)
        await consumer_bus.close()
        await producer_bus.close()

    assert len(written) > 200
    assert set(applied) == set(written), f"lost: {len(set(written) - set(applied))}"
    assert max(applied.values()) == 1
    with engine.connect() as conn:
        assert unpublished_count(conn) == 0
    # The restart was felt: the relay had to retry publishing while the broker was away.
    assert relay.failures > 0
