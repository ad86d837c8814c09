"""The bus contract: every backend runs these same tests (in-process and RabbitMQ)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import pytest

from tranche.bus import (
    Bus,
    ChunkTooLargeError,
    DeadLetter,
    Delivery,
    EventCodec,
    InProcessBus,
    Message,
    NoResponderError,
    QueueSpec,
    RemoteError,
    RequestTimeoutError,
)
from tranche.matching import Bid, OfferMatched
from tranche.testing.postgres import ServerUnavailable
from tranche.testing.rabbitmq import RabbitNode

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class BusContract:
    """Subclasses provide the ``bus`` fixture (a started bus); everything else is shared."""

    # publish / subscribe

    async def test_a_wildcard_subscription_receives_only_matching_topics(self, bus: Bus) -> None:
        got: list[str] = []

        async def handler(message: Message) -> None:
            got.append(message.routing_key)

        run = unique("r")
        await bus.subscribe(f"loan.*.listed.{run}", handler)
        everything: list[str] = []

        async def collect(message: Message) -> None:
            everything.append(message.routing_key)

        await bus.subscribe(f"loan.#.{run}", collect)
        for topic in ("loan.L1.listed", "loan.L1.withdrawn", "loan.L1.x.listed", "loan.L2.listed"):
            await bus.publish(Message(b"{}", routing_key=f"{topic}.{run}"))
        await eventually(lambda: len(everything) == 4, what="all four events on loan.#")
        await asyncio.sleep(0.1)
        assert sorted(got) == [f"loan.L1.listed.{run}", f"loan.L2.listed.{run}"]

    async def test_message_properties_survive_the_trip(self, bus: Bus) -> None:
        got: list[Message] = []

        async def handler(message: Message) -> None:
            got.append(message)

        topic = unique("props")
        await bus.subscribe(topic, handler)
        sent = Message(
            b'{"a":1}', routing_key=topic, type="Thing", correlation_id="c-1", headers={"tenant": "t1"}
        )
        await bus.publish(sent)
        await eventually(lambda: len(got) == 1)
        (received,) = got
        assert (received.body, received.type, received.message_id, received.correlation_id) == (
            sent.body,
            "Thing",
            sent.message_id,
            "c-1",
        )
        assert received.headers["tenant"] == "t1"

    async def test_a_frozen_dataclass_event_comes_back_equal(self, bus: Bus) -> None:
        codec = EventCodec(OfferMatched)
        event = OfferMatched(
            match_id="m1",
            lender_id="len1",
            loan_id="L1",
            loan_version=3,
            currency="EUR",
            all_or_nothing=False,
            bids=(
                Bid("b1", "o1", "p1", "i1", 1250, Decimal("0.0810"), Decimal("0.0950"), Decimal("0.0140")),
            ),
        )
        got: list[object] = []

        async def handler(message: Message) -> None:
            got.append(codec.from_message(message))

        topic = unique("offer.L1.matched")
        await bus.subscribe(topic, handler)
        await bus.publish(codec.to_message(event, topic))
        await eventually(lambda: len(got) == 1)
        assert got == [event]

    async def test_many_publishers_reach_one_collector(self, bus: Bus) -> None:
        run = unique("audit")
        seen: list[str] = []

        async def collect(message: Message) -> None:
            seen.append(message.json()["n"])

        await bus.subscribe(f"#.{run}", collect, group=run)

        async def publisher(name: str) -> None:
            for i in range(20):
                await bus.publish(Message.of_json({"n": f"{name}-{i}"}, routing_key=f"{name}.did.{run}"))

        await asyncio.gather(*(publisher(name) for name in ("intake", "matching", "ledger")))
        await eventually(lambda: len(seen) == 60, what="60 collected events")
        assert len(set(seen)) == 60

    async def test_subscribers_of_one_group_share_its_events_each_once(self, bus: Bus) -> None:
        group = unique("group")
        handled: Counter[str] = Counter()
        by_subscriber: Counter[int] = Counter()

        def make(n: int) -> Callable[[Message], Awaitable[None]]:
            async def handler(message: Message) -> None:
                handled[message.message_id] += 1
                by_subscriber[n] += 1
                await asyncio.sleep(0.005)

            return handler

        await bus.subscribe(f"ev.{group}", make(1), group=group, prefetch=1)
        await bus.subscribe(f"ev.{group}", make(2), group=group, prefetch=1)
        for _ in range(20):
            await bus.publish(Message(b"{}", routing_key=f"ev.{group}"))
        await eventually(lambda: sum(handled.values()) == 20, what="20 handled events")
        await asyncio.sleep(0.1)
        assert set(handled.values()) == {1}
        assert by_subscriber[1] > 0 and by_subscriber[2] > 0

    async def test_a_failing_group_handler_gets_the_event_again_then_dead_letters_it(self, bus: Bus) -> None:
        group = unique("fails")
        attempts: list[str] = []

        async def handler(message: Message) -> None:
            attempts.append(message.message_id)
            raise RuntimeError("cannot apply")

        await bus.subscribe(f"ev.{group}", handler, group=group, spec=QueueSpec(max_deliveries=3))
        await bus.publish(Message(b"{}", routing_key=f"ev.{group}"))
        await eventually(lambda: len(attempts) == 3, what="three attempts")
        dead = await self._wait_dead(bus, group, 1)
        assert dead[0].reason == "delivery_limit"

    # request / response

    async def test_a_request_gets_its_answer(self, bus: Bus) -> None:
        service = unique("depth")

        async def respond(message: Message) -> Message:
            return Message.of_json({"market": message.json()["market"], "depth": 42})

        await bus.serve(service, respond)
        request = Message.of_json({"market": "EUR"})
        answer = await bus.request(service, request, timeout=5)
        assert answer.json() == {"market": "EUR", "depth": 42}
        assert answer.correlation_id == request.message_id

    async def test_a_request_nobody_serves_fails_with_no_responder(self, bus: Bus) -> None:
        with pytest.raises(NoResponderError):
            await bus.request(unique("nobody"), Message(b"{}"), timeout=2)

    async def test_a_request_to_a_cancelled_responder_fails_with_no_responder(self, bus: Bus) -> None:
        service = unique("gone")

        async def respond(message: Message) -> bytes:
            return b"ok"

        serving = await bus.serve(service, respond)
        assert (await bus.request(service, Message(b"{}"))).body == b"ok"
        await serving.cancel()
        await asyncio.sleep(0.1)
        with pytest.raises(NoResponderError):
            await bus.request(service, Message(b"{}"), timeout=2)

    async def test_a_slow_responder_times_the_request_out(self, bus: Bus) -> None:
        service = unique("slow")

        async def respond(message: Message) -> bytes:
            await asyncio.sleep(2)
            return b"late"

        await bus.serve(service, respond)
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError):
            await bus.request(service, Message(b"{}"), timeout=0.3)
        assert time.monotonic() - started < 1.5

    async def test_a_failing_responder_raises_remote_error(self, bus: Bus) -> None:
        service = unique("broken")

        async def respond(message: Message) -> bytes:
            raise ValueError("no such market")

        await bus.serve(service, respond)
        with pytest.raises(RemoteError, match="no such market"):
            await bus.request(service, Message(b"{}"))

    async def test_a_chunked_answer_arrives_in_order_and_complete(self, bus: Bus) -> None:
        service = unique("export")

        async def respond(message: Message) -> AsyncIterator[bytes]:
            for i in range(message.json()["chunks"]):
                yield f"chunk-{i}".encode()

        await bus.serve_stream(service, respond)
        chunks = [c.body async for c in bus.request_stream(service, Message.of_json({"chunks": 25}))]
        assert chunks == [f"chunk-{i}".encode() for i in range(25)]

    async def test_a_chunk_over_the_bound_is_refused(self, bus: Bus) -> None:
        service = unique("huge")

        async def respond(message: Message) -> AsyncIterator[bytes]:
            yield b"small"
            yield b"x" * (bus.max_chunk_bytes + 1)

        await bus.serve_stream(service, respond)
        received: list[bytes] = []
        with pytest.raises(ChunkTooLargeError):
            async for chunk in bus.request_stream(service, Message(b"{}")):
                received.append(chunk.body)
        assert received == [b"small"]

    async def test_a_stream_nobody_serves_fails_with_no_responder(self, bus: Bus) -> None:
        with pytest.raises(NoResponderError):
            async for _ in bus.request_stream(unique("nobody"), Message(b"{}")):
                pass

    # task distribution

    async def test_competing_consumers_take_tasks_round_robin(self, bus: Bus) -> None:
        queue = unique("tasks")
        await bus.declare_queue(queue)
        taken: list[int] = []

        def worker(n: int) -> Callable[[Delivery], Awaitable[None]]:
            async def handle(delivery: Delivery) -> None:
                taken.append(n)
                await asyncio.sleep(0.01)

            return handle

        await bus.consume_tasks(queue, worker(1), prefetch=1)
        await bus.consume_tasks(queue, worker(2), prefetch=1)
        for i in range(20):
            await bus.send_task(queue, Message.of_json({"i": i}))
        await eventually(lambda: len(taken) == 20, what="20 tasks")
        counts = Counter(taken)
        assert counts[1] >= 7 and counts[2] >= 7, counts

    async def test_a_consumer_never_holds_more_than_its_prefetch(self, bus: Bus) -> None:
        queue = unique("prefetch")
        held: list[Delivery] = []
        for i in range(10):
            await bus.send_task(queue, Message.of_json({"i": i}))

        async def hold(delivery: Delivery) -> None:
            held.append(delivery)
            await asyncio.Event().wait()

        await bus.consume_tasks(queue, hold, prefetch=3)
        await eventually(lambda: len(held) == 3)
        await asyncio.sleep(0.3)
        assert len(held) == 3
        await held[0].ack()
        await eventually(lambda: len(held) == 4, what="a fourth delivery after one ack")

    async def test_a_nacked_task_is_redelivered_and_marked_so(self, bus: Bus) -> None:
        queue = unique("nack")
        seen: list[tuple[bool, int]] = []

        async def handle(delivery: Delivery) -> None:
            seen.append((delivery.redelivered, delivery.attempt))
            if delivery.attempt == 1:
                await delivery.nack()

        await bus.consume_tasks(queue, handle)
        await bus.send_task(queue, Message(b"{}"))
        await eventually(lambda: len(seen) == 2)
        assert seen == [(False, 1), (True, 2)]

    async def test_tasks_held_by_a_cancelled_consumer_reach_another(self, bus: Bus) -> None:
        queue = unique("crash")
        for i in range(5):
            await bus.send_task(queue, Message.of_json({"i": i}))
        held: list[Delivery] = []

        async def hold(delivery: Delivery) -> None:
            held.append(delivery)
            await asyncio.Event().wait()

        first = await bus.consume_tasks(queue, hold, prefetch=5)
        await eventually(lambda: len(held) == 5)
        done: list[tuple[int, bool]] = []

        async def work(delivery: Delivery) -> None:
            done.append((delivery.message.json()["i"], delivery.redelivered))

        await bus.consume_tasks(queue, work)
        await first.cancel()
        await eventually(lambda: len(done) == 5, what="five redelivered tasks")
        assert sorted(done) == [(i, True) for i in range(5)]

    async def test_a_task_past_its_delivery_limit_is_dead_lettered_then_replayed(self, bus: Bus) -> None:
        queue = unique("limit")
        await bus.declare_queue(queue, QueueSpec(max_deliveries=2))
        fail = True
        attempts: list[int] = []
        done: list[Message] = []

        async def handle(delivery: Delivery) -> None:
            attempts.append(delivery.attempt)
            if fail:
                raise RuntimeError("poison")
            done.append(delivery.message)

        await bus.consume_tasks(queue, handle)
        task = Message.of_json({"loan": "L1"})
        await bus.send_task(queue, task)
        dead = await self._wait_dead(bus, queue, 1)
        assert attempts == [1, 2]
        assert dead[0].reason == "delivery_limit"
        assert dead[0].message.message_id == task.message_id
        assert dead[0].message.json() == {"loan": "L1"}
        # Inspecting leaves the dead letters in place.
        assert len(await bus.dead_letters(queue)) == 1

        fail = False
        assert await bus.replay_dead_letters(queue) == 1
        await eventually(lambda: len(done) == 1, what="the replayed task")
        assert done[0].message_id == task.message_id
        assert await bus.dead_letters(queue) == []

    async def test_a_task_given_up_on_is_dead_lettered_as_rejected(self, bus: Bus) -> None:
        queue = unique("reject")

        async def handle(delivery: Delivery) -> None:
            await delivery.dead_letter()

        await bus.consume_tasks(queue, handle)
        await bus.send_task(queue, Message(b"{}"))
        dead = await self._wait_dead(bus, queue, 1)
        assert dead[0].reason == "rejected"

    async def test_a_retried_task_comes_back_after_its_backoff_and_dead_letters_when_retries_run_out(
        self, bus: Bus
    ) -> None:
        queue = unique("retry")
        await bus.declare_queue(queue, QueueSpec(retry_delays=(0.3, 0.3)))
        arrivals: list[tuple[float, int]] = []

        async def handle(delivery: Delivery) -> None:
            arrivals.append((time.monotonic(), delivery.retries))
            await delivery.retry()

        await bus.consume_tasks(queue, handle)
        await bus.send_task(queue, Message(b"{}"))
        dead = await self._wait_dead(bus, queue, 1)
        assert [retries for _, retries in arrivals] == [0, 1, 2]
        assert arrivals[1][0] - arrivals[0][0] >= 0.25
        assert arrivals[2][0] - arrivals[1][0] >= 0.25
        assert dead[0].reason == "rejected"

    async def test_a_task_held_past_the_ack_timeout_is_redelivered(self, bus: Bus) -> None:
        queue = unique("timeout")
        await bus.declare_queue(queue, QueueSpec(ack_timeout=0.5))
        deliveries: list[Delivery] = []

        async def handle(delivery: Delivery) -> None:
            deliveries.append(delivery)
            if delivery.attempt == 1:
                await asyncio.Event().wait()  # a stuck handler

        await bus.consume_tasks(queue, handle)
        await bus.send_task(queue, Message(b"{}"))
        await eventually(lambda: len(deliveries) == 2, timeout=5, what="redelivery after the ack timeout")
        assert deliveries[1].redelivered

    async def _wait_dead(self, bus: Bus, queue: str, count: int, timeout: float = 8.0) -> list[DeadLetter]:
        deadline = time.monotonic() + timeout
        while True:
            dead = await bus.dead_letters(queue)
            if len(dead) >= count or time.monotonic() > deadline:
                assert len(dead) == count, dead
                return dead
            await asyncio.sleep(0.05)


class TestInProcessBus(BusContract):
    @pytest.fixture
    async def bus(self) -> AsyncIterator[Bus]:
        bus = InProcessBus()
        async with bus:
            yield bus


@pytest.fixture(scope="session")
def rabbit_url() -> str:
    try:
        return RabbitNode.shared().url
    except ServerUnavailable as error:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"RabbitMQ unavailable: {error}", pytrace=False)
        pytest.skip(f"RabbitMQ unavailable: {error}")


@pytest.mark.rabbitmq
class TestRabbitBus(BusContract):
    @pytest.fixture
    async def bus(self, rabbit_url: str) -> AsyncIterator[Bus]:
        from tranche.bus.rabbit import RabbitBus

        bus = RabbitBus(rabbit_url)
        async with bus:
            yield bus
