"""Bus throughput: messages/s to publish and to consume, 1 KB persistent messages with publisher confirms,
on the in-process bus and on RabbitMQ (a private node this script starts), side by side.

Each backend's figures sit beside a floor measured in the same run without tranche's layer: a bare
``asyncio.Queue`` for the in-process bus, bare aio-pika on the same quorum queue type for RabbitMQ.

    python bench/bus.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika

from tranche.bus import Bus, InProcessBus, Message, QueueSpec
from tranche.bus.rabbit import RabbitBus
from tranche.testing.rabbitmq import RabbitNode

BODY = b"x" * 1024
PREFETCH = 100


async def timed(action: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


async def bench_bus(bus: Bus, n: int, n_single: int) -> dict[str, float]:
    """publish one at a time (each confirmed), publish pipelined (publish_many), consume with acks."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    spec = QueueSpec(max_deliveries=3)

    async def nothing(message: Message) -> None:
        return None

    # Create the group's queue and leave it without a consumer, so that published events wait in it.
    await (await bus.subscribe(f"bench.{group}", nothing, group=group, spec=spec)).cancel()

    async def publish_single() -> None:
        for _ in range(n_single):
            await bus.publish(Message(BODY, routing_key=f"bench.{group}"))

    async def publish_pipelined() -> None:
        await bus.publish_many([Message(BODY, routing_key=f"bench.{group}") for _ in range(n)])

    single = await timed(publish_single)
    pipelined = await timed(publish_pipelined)

    done = asyncio.Event()
    seen = 0
    expected = n + n_single

    async def count(message: Message) -> None:
        nonlocal seen
        seen += 1
        if seen == expected:
            done.set()

    async def consume() -> None:
        subscription = await bus.subscribe(f"bench.{group}", count, group=group, spec=spec, prefetch=PREFETCH)
        await done.wait()
        await subscription.cancel()

    consumed = await timed(consume)
    return {
        "publish_confirmed_one_at_a_time": n_single / single,
        "publish_confirmed_pipelined": n / pipelined,
        "consume_acked": expected / consumed,
    }


async def floor_memory(n: int, n_single: int) -> dict[str, float]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def put_single() -> None:
        for _ in range(n_single):
            await queue.put(BODY)

    async def put_many() -> None:
        for _ in range(n):
            await queue.put(BODY)

    async def get_all() -> None:
        for _ in range(n + n_single):
            await queue.get()
            queue.task_done()

    return {
        "publish_confirmed_one_at_a_time": n_single / await timed(put_single),
        "publish_confirmed_pipelined": n / await timed(put_many),
        "consume_acked": (n + n_single) / await timed(get_all),
    }


async def floor_rabbit(url: str, n: int, n_single: int) -> dict[str, float]:
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    name = f"floor-{uuid.uuid4().hex[:8]}"
    queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})

    def message() -> aio_pika.Message:
        return aio_pika.Message(BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)

    async def put_single() -> None:
        for _ in range(n_single):
            await channel.default_exchange.publish(message(), routing_key=name)

    async def put_many() -> None:
        window = asyncio.Semaphore(500)

        async def one() -> None:
            async with window:
                await channel.default_exchange.publish(message(), routing_key=name)

        await asyncio.gather(*(one() for _ in range(n)))

    single = await timed(put_single)
    pipelined = await timed(put_many)
    consume_channel = await connection.channel()
    await consume_channel.set_qos(prefetch_count=PREFETCH)
    consume_queue = await consume_channel.get_queue(name)
    done = asyncio.Event()
    seen = 0

    async def on_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal seen
        await incoming.ack()
        seen += 1
        if seen == n + n_single:
            done.set()

    async def consume() -> None:
        await consume_queue.consume(on_message)
        await done.wait()

    consumed = await timed(consume)
    await consume_channel.close()
    # Quorum queues refuse the if-unused delete that aio-pika sends by default.
    await queue.delete(if_unused=False, if_empty=False)
    await connection.close()
    return {
        "publish_confirmed_one_at_a_time": n_single / single,
        "publish_confirmed_pipelined": n / pipelined,
        "consume_acked": (n + n_single) / consumed,
    }


async def run(n: int, n_single: int, url: str) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    results["memory_floor"] = await floor_memory(n, n_single)
    async with InProcessBus() as memory:
        results["memory"] = await bench_bus(memory, n, n_single)
    results["rabbit_floor"] = await floor_rabbit(url, n, n_single)
    async with RabbitBus(url) as rabbit:
        results["rabbit"] = await bench_bus(rabbit, n, n_single)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    n, n_single = (2_000, 300) if args.quick else (20_000, 2_000)

    started = time.perf_counter()
    with RabbitNode() as node:
        print(f"private RabbitMQ node up in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        results = asyncio.run(run(n, n_single, node.url))

    rows = ["publish_confirmed_one_at_a_time", "publish_confirmed_pipelined", "consume_acked"]
    columns = ["memory", "memory_floor", "rabbit", "rabbit_floor"]
    print(f"bus throughput, msgs/s, 1 KB persistent (n={n}, one-at-a-time n={n_single}, prefetch {PREFETCH})")
    print(f"{'':34}" + "".join(f"{c:>15}" for c in columns))
    for row in rows:
        print(f"{row:34}" + "".join(f"{results[c][row]:>15,.0f}" for c in columns))

    out = Path(__file__).parent / "results" / "bus.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "bus",
                "quick": args.quick,
                "messages": n,
                "messages_one_at_a_time": n_single,
                "body_bytes": len(BODY),
                "prefetch": PREFETCH,
                "msgs_per_s": results,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
