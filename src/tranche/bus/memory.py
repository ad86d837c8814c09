"""The in-process bus (``memory://``): asyncio queues with the semantics of the RabbitMQ backend.

Nothing leaves the process and nothing survives it: this backend is for the embedded mode and for tests.
It keeps what components rely on: prefetch, round robin among competing consumers, ack/nack, redelivery
when a consumer goes away or overruns its queue's ack timeout, a delivery limit with a dead-letter queue
that can be inspected and replayed, delayed retry, topic wildcards, request/response and chunked responses.

What a publish's confirmation means. RabbitMQ confirms a message once its durable queues hold it: it survives
a crash of the publisher or of the consumer. Here a queue lives in the process and dies with it, so the
embedded mode (``connect("memory://")``) confirms a publish only once every durable group that received the
message has *handled* it (acknowledged it, or dead-lettered it past its delivery limit). The outbox marks a row
published on that confirmation, so an event that was relayed but not yet handled when the process died is
still in the outbox after a restart and is relayed again; handlers are idempotent. ``InProcessBus()`` built
directly confirms at once (``confirm_handled=False``), which is what tests of the bus's other semantics want.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from tranche.bus.api import Bus, EventHandler, Responder, StreamResponder, TaskHandler
from tranche.bus.errors import (
    BusClosedError,
    BusError,
    ChunkTooLargeError,
    NoResponderError,
    RemoteError,
    RequestTimeoutError,
)
from tranche.bus.message import (
    RETRIES_HEADER,
    DeadLetter,
    Delivery,
    Message,
    QueueSpec,
    Subscription,
)
from tranche.bus.topics import topic_matches

log = logging.getLogger("tranche.bus")


@dataclass(slots=True)
class _Entry:
    message: Message
    deliveries: int = 0
    handled: asyncio.Future[None] | None = None  # set when a publish waits for the message to be handled

    def done(self) -> None:
        if self.handled is not None and not self.handled.done():
            self.handled.set_result(None)


class _Queue:
    def __init__(self, bus: InProcessBus, name: str, spec: QueueSpec, *, private: bool) -> None:
        self.bus = bus
        self.name = name
        self.spec = spec
        self.private = private
        self.ready: deque[_Entry] = deque()
        self.dead: deque[DeadLetter] = deque()
        self.consumers: list[_Consumer] = []
        self.patterns: set[str] = set()
        self._next = 0
        self._scheduled = False

    def put(self, entry: _Entry, *, front: bool = False) -> None:
        if front:
            self.ready.appendleft(entry)
        else:
            self.ready.append(entry)
        self.schedule()

    def schedule(self) -> None:
        # Dispatch from the event loop, not from inside ack()/publish(), so handlers never nest.
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._scheduled = False
        while self.ready and self.consumers:
            consumer = self._pick()
            if consumer is None:
                return
            entry = self.ready.popleft()
            consumer.deliver(entry)

    def _pick(self) -> _Consumer | None:
        count = len(self.consumers)
        for offset in range(count):
            index = (self._next + offset) % count
            candidate = self.consumers[index]
            if len(candidate.unsettled) < candidate.prefetch:
                self._next = (index + 1) % count
                return candidate
        return None

    def give_back(self, entry: _Entry) -> None:
        """A delivery ended without an ack: redeliver, or dead-letter past the delivery limit."""
        if entry.deliveries >= self.spec.max_deliveries:
            self.dead_letter(entry.message, "delivery_limit", entry)
        else:
            self.put(entry, front=True)

    def dead_letter(self, message: Message, reason: str, entry: _Entry | None = None) -> None:
        if entry is not None:
            entry.done()  # dead-lettered is handled: an operator replays it from the dead-letter queue
        if self.private:
            log.warning("dropping message %s of a private subscription (%s)", message.message_id, reason)
            return
        self.dead.append(
            DeadLetter(message=message, queue=self.name, reason=reason, dead_at=datetime.now(UTC))
        )


class _MemoryDelivery(Delivery):
    def __init__(self, consumer: _Consumer, entry: _Entry) -> None:
        self.message = entry.message
        self.attempt = entry.deliveries
        self.redelivered = entry.deliveries > 1
        self.queue = consumer.queue.name
        self._consumer = consumer
        self._entry = entry
        self._settled = False
        self._timer: asyncio.TimerHandle | None = None
        timeout = consumer.queue.spec.ack_timeout
        if timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(timeout, self._expire)

    @property
    def settled(self) -> bool:
        return self._settled

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        if self._timer is not None:
            self._timer.cancel()
        self._consumer.unsettled.discard(self)
        self._consumer.queue.schedule()
        return True

    def _expire(self) -> None:
        if self._settle():
            log.warning("ack timeout on %s in %s; redelivering", self.message.message_id, self.queue)
            self._consumer.queue.give_back(self._entry)

    def return_to_queue(self) -> None:
        if self._settle():
            self._consumer.queue.give_back(self._entry)

    async def ack(self) -> None:
        if self._settle():
            self._entry.done()

    async def nack(self, *, requeue: bool = True) -> None:
        if not self._settle():
            return
        if requeue:
            self._consumer.queue.give_back(self._entry)
        else:
            self._consumer.queue.dead_letter(self.message, "rejected", self._entry)

    async def retry(self) -> None:
        if not self._settle():
            return
        queue = self._consumer.queue
        level = self.retries
        if level >= len(queue.spec.retry_delays):
            queue.dead_letter(self.message, "rejected", self._entry)
            return
        again = _Entry(self.message.with_headers(**{RETRIES_HEADER: level + 1}), handled=self._entry.handled)
        queue.bus.later(queue.spec.retry_delays[level], queue, again)


class _Consumer(Subscription):
    def __init__(self, queue: _Queue, handler: TaskHandler, prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self.queue = queue
        self.handler = handler
        self.prefetch = prefetch
        self.unsettled: set[_MemoryDelivery] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.active = True

    def deliver(self, entry: _Entry) -> None:
        entry.deliveries += 1
        delivery = _MemoryDelivery(self, entry)
        self.unsettled.add(delivery)
        task = asyncio.get_running_loop().create_task(self._run(delivery))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, delivery: _MemoryDelivery) -> None:
        try:
            await self.handler(delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler failed on %s from %s", delivery.message.message_id, delivery.queue)
            if not delivery.settled:
                await delivery.nack(requeue=True)
            return
        if not delivery.settled:
            await delivery.ack()

    async def cancel(self) -> None:
        if not self.active:
            return
        self.active = False
        self.queue.bus.forget(self)
        if self in self.queue.consumers:
            self.queue.consumers.remove(self)
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # What the consumer held goes back, as when a RabbitMQ consumer's channel closes.
        for delivery in list(self.unsettled):
            delivery.return_to_queue()
        if self.queue.private:
            self.queue.bus.drop_queue(self.queue)


class _Responder(Subscription):
    def __init__(self, bus: InProcessBus, service: str, responder: Responder | StreamResponder) -> None:
        self.bus = bus
        self.service = service
        self.responder = responder

    async def cancel(self) -> None:
        self.bus.unserve(self)


class InProcessBus(Bus):
    """The bus inside one process; see the module docstring. ``url`` is accepted for symmetry."""

    def __init__(
        self, url: str = "memory://", *, max_chunk_bytes: int | None = None, confirm_handled: bool = False
    ) -> None:
        self.url = url
        self.confirm_handled = confirm_handled
        self._waiting: set[asyncio.Future[None]] = set()
        if max_chunk_bytes is not None:
            self.max_chunk_bytes = max_chunk_bytes
        self._queues: dict[str, _Queue] = {}
        self._services: dict[str, list[_Responder]] = {}
        self._stream_services: dict[str, list[_Responder]] = {}
        self._round_robin: dict[str, int] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._consumers: set[_Consumer] = set()
        self._private = 0
        self._open = False

    @property
    def connected(self) -> bool:
        return self._open

    async def start(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False
        for waiting in list(self._waiting):
            if not waiting.done():
                waiting.set_exception(BusClosedError("the bus closed before the message was handled"))
        for consumer in list(self._consumers):
            await consumer.cancel()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._services.clear()
        self._stream_services.clear()

    def _check(self) -> None:
        if not self._open:
            raise BusClosedError("the bus is not started (or already closed)")

    # queues

    def _queue(self, name: str, spec: QueueSpec | None = None) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue(self, name, spec or QueueSpec(), private=False)
        return queue

    def forget(self, consumer: _Consumer) -> None:
        self._consumers.discard(consumer)

    def drop_queue(self, queue: _Queue) -> None:
        self._queues.pop(queue.name, None)

    def later(self, delay: float, queue: _Queue, entry: _Entry) -> None:
        loop = asyncio.get_running_loop()

        def arrive() -> None:
            self._timers.discard(handle)
            queue.put(entry)

        handle = loop.call_later(delay, arrive)
        self._timers.add(handle)

    def _consume(self, queue: _Queue, handler: TaskHandler, prefetch: int) -> _Consumer:
        consumer = _Consumer(queue, handler, prefetch)
        queue.consumers.append(consumer)
        self._consumers.add(consumer)
        queue.schedule()
        return consumer

    # publish / subscribe

    async def publish(self, message: Message) -> None:
        await self.publish_many([message])

    async def publish_many(self, messages: Sequence[Message]) -> None:
        """Route every message to its queues in order; with ``confirm_handled``, return once every durable group
        that received them has handled them (see the module docstring)."""
        self._check()
        waiting: list[asyncio.Future[None]] = []
        loop = asyncio.get_running_loop()
        for message in messages:
            for queue in list(self._queues.values()):
                if any(topic_matches(pattern, message.routing_key) for pattern in queue.patterns):
                    entry = _Entry(message)
                    if self.confirm_handled and not queue.private:
                        entry.handled = loop.create_future()
                        waiting.append(entry.handled)
                    queue.put(entry)
        if not waiting:
            return
        self._waiting.update(waiting)
        try:
            await asyncio.gather(*waiting)
        finally:
            self._waiting.difference_update(waiting)

    async def subscribe(
        self,
        patterns: str | Sequence[str],
        handler: EventHandler,
        *,
        group: str | None = None,
        spec: QueueSpec | None = None,
        prefetch: int = 50,
    ) -> Subscription:
        self._check()
        wanted = [patterns] if isinstance(patterns, str) else list(patterns)
        for pattern in wanted:
            topic_matches(pattern, "")  # validates the pattern now rather than at the first publish
        if group is None:
            self._private += 1
            queue = _Queue(self, f"private.{self._private}", spec or QueueSpec(), private=True)
            self._queues[queue.name] = queue
        else:
            queue = self._queue(group, spec)
        queue.patterns.update(wanted)
        private = group is None

        async def on_delivery(delivery: Delivery) -> None:
            try:
                await handler(delivery.message)
            except Exception:
                if not private:
                    raise
                log.exception("subscriber failed on %s; dropped", delivery.message.message_id)

        return self._consume(queue, on_delivery, prefetch)

    # tasks

    async def declare_queue(self, queue: str, spec: QueueSpec | None = None) -> None:
        self._check()
        self._queue(queue, spec)

    async def send_task(self, queue: str, message: Message) -> None:
        self._check()
        self._queue(queue).put(_Entry(message))

    async def consume_tasks(self, queue: str, handler: TaskHandler, *, prefetch: int = 10) -> Subscription:
        self._check()
        return self._consume(self._queue(queue), handler, prefetch)

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        self._check()
        return list(self._queue(queue).dead)[:limit]

    async def replay_dead_letters(self, queue: str, *, limit: int | None = None) -> int:
        self._check()
        target = self._queue(queue)
        moved = 0
        while target.dead and (limit is None or moved < limit):
            dead = target.dead.popleft()
            target.put(_Entry(dead.message.with_headers(**{RETRIES_HEADER: 0})))
            moved += 1
        return moved

    # request / response

    def _pick_responder(self, table: dict[str, list[_Responder]], service: str) -> _Responder:
        responders = table.get(service)
        if not responders:
            raise NoResponderError(f"nobody serves {service!r}", record=service)
        index = self._round_robin.get(service, 0) % len(responders)
        self._round_robin[service] = index + 1
        return responders[index]

    def unserve(self, responder: _Responder) -> None:
        for table in (self._services, self._stream_services):
            responders = table.get(responder.service, [])
            if responder in responders:
                responders.remove(responder)

    async def serve(self, service: str, responder: Responder) -> Subscription:
        self._check()
        serving = _Responder(self, service, responder)
        self._services.setdefault(service, []).append(serving)
        return serving

    async def request(self, service: str, message: Message, *, timeout: float = 5.0) -> Message:
        self._check()
        serving = self._pick_responder(self._services, service)
        respond: Responder = serving.responder  # type: ignore[assignment]
        try:
            answer = await asyncio.wait_for(respond(message), timeout)
        except TimeoutError:
            raise RequestTimeoutError(f"{service!r} did not answer in {timeout}s", record=service) from None
        except BusError:
            raise
        except Exception as error:
            raise RemoteError(
                f"{service!r} failed: {type(error).__name__}: {error}", record=service
            ) from error
        return _reply(answer, message)

    async def serve_stream(self, service: str, responder: StreamResponder) -> Subscription:
        self._check()
        serving = _Responder(self, service, responder)
        self._stream_services.setdefault(service, []).append(serving)
        return serving

    async def request_stream(
        self, service: str, message: Message, *, timeout: float = 5.0
    ) -> AsyncIterator[Message]:
        self._check()
        serving = self._pick_responder(self._stream_services, service)
        respond: StreamResponder = serving.responder  # type: ignore[assignment]
        chunks = respond(message)
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(anext(chunks), timeout)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise RequestTimeoutError(
                        f"{service!r} sent no chunk in {timeout}s", record=service
                    ) from None
                except BusError:
                    raise
                except Exception as error:
                    raise RemoteError(
                        f"{service!r} failed: {type(error).__name__}: {error}", record=service
                    ) from error
                reply = _reply(chunk, message)
                if len(reply.body) > self.max_chunk_bytes:
                    raise ChunkTooLargeError(
                        f"{service!r} sent a chunk of {len(reply.body)} bytes; the bound is "
                        f"{self.max_chunk_bytes}",
                        record=service,
                    )
                yield reply
        finally:
            await _aclose(chunks)


def _reply(answer: Message | bytes, request: Message) -> Message:
    if isinstance(answer, Message):
        return Message(
            body=answer.body,
            type=answer.type,
            headers=answer.headers,
            content_type=answer.content_type,
            correlation_id=request.message_id,
        )
    return Message(body=answer, correlation_id=request.message_id)


async def _aclose(chunks: AsyncIterator[Message | bytes]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()
