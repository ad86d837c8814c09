"""The RabbitMQ bus (``amqp://``), on aio-pika.

Topology, all named from the queue or service it serves:

- events: one durable topic exchange (``tranche.events``). A subscription group is a durable quorum queue
  named after the group and bound with the group's patterns; a private subscription is an exclusive,
  auto-deleted queue.
- work queue ``Q``: a durable quorum queue with ``x-delivery-limit`` (``max_deliveries - 1``: RabbitMQ counts
  returns, not deliveries) and a dead-letter exchange (``tranche.dead``, direct, routing key ``Q``) that
  feeds the classic durable queue ``Q.dead``. Delayed retry: one classic durable queue ``Q.retry.N`` per
  backoff level, each with a queue-wide TTL that dead-letters back into ``Q`` (a per-message TTL would
  only expire at the head of a mixed queue).
- requests to service ``S``: an auto-deleted queue ``tranche.rpc.S`` shared by its responders, so it exists
  exactly while somebody serves; a request is published with ``mandatory`` and comes back unroutable
  (→ :class:`NoResponderError`) otherwise. Answers go to a private reply queue per bus.

Every message is persistent and every publish waits for the broker's confirm. Consumers ack manually. The
connection is robust: after a broker restart it reconnects and restores queues and consumers; a publish
while the broker is away raises :class:`PublishError`, and the caller (the outbox relay) tries again.

RabbitMQ's own consumer ack timeout (``consumer_timeout``) is server-wide and checked about once a minute;
a queue's ``QueueSpec.ack_timeout`` is enforced here, in the consumer, by closing the consumer's channel
when a delivery overruns (which returns all of that consumer's unacked deliveries to the queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)

from tranche.bus.api import Bus, EventHandler, Responder, StreamResponder, TaskHandler
from tranche.bus.errors import (
    BusClosedError,
    BusError,
    ChunkTooLargeError,
    NoResponderError,
    PublishError,
    RemoteError,
    RequestTimeoutError,
)
from tranche.bus.message import (
    CHUNK_HEADER,
    ERROR_HEADER,
    LAST_CHUNK_HEADER,
    RETRIES_HEADER,
    DeadLetter,
    Delivery,
    HeaderValue,
    Message,
    QueueSpec,
    Subscription,
)

log = logging.getLogger("tranche.bus")
# aiormq logs an ERROR with a traceback for every failed reconnection attempt (one a second while the broker
# is down); the bus says once that it waits, and again when it is back.
logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
logging.getLogger("aio_pika.robust_connection").setLevel(logging.ERROR)
# ... and an ERROR for each channel whose close callback finds the transport gone while it reconnects.
logging.getLogger("aio_pika.tools").setLevel(logging.CRITICAL)

_BROKER_HEADERS = ("x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason")
_PUBLISH_WINDOW = 500  # confirms in flight at once in publish_many


def _to_amqp(message: Message, *, persistent: bool = True) -> aio_pika.Message:
    return aio_pika.Message(
        body=message.body,
        headers=dict(message.headers),
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type or None,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        if persistent
        else aio_pika.DeliveryMode.NOT_PERSISTENT,
    )


def _clean_headers(headers: Mapping[str, Any] | None) -> dict[str, HeaderValue]:
    clean: dict[str, HeaderValue] = {}
    for key, value in (headers or {}).items():
        if key in _BROKER_HEADERS or key == "x-delivery-count":
            continue
        if value is None or isinstance(value, str | int | bool):
            clean[key] = value
        elif isinstance(value, bytes):
            clean[key] = value.decode(errors="replace")
    return clean


def _from_amqp(incoming: AbstractIncomingMessage) -> Message:
    return Message(
        body=incoming.body,
        routing_key=incoming.routing_key or "",
        type=incoming.type or "",
        message_id=incoming.message_id or uuid.uuid4().hex,
        correlation_id=incoming.correlation_id,
        headers=_clean_headers(incoming.headers),
        content_type=incoming.content_type or "application/json",
    )


class _RabbitDelivery(Delivery):
    def __init__(self, consumer: _RabbitConsumer, incoming: AbstractIncomingMessage) -> None:
        self.message = _from_amqp(incoming)
        count = (incoming.headers or {}).get("x-delivery-count")
        self.attempt = (count if isinstance(count, int) else (1 if incoming.redelivered else 0)) + 1
        self.redelivered = bool(incoming.redelivered)
        self.queue = consumer.queue_name
        self._consumer = consumer
        self.reply_to = incoming.reply_to
        self._incoming = incoming
        self._settled = False
        self._timer: asyncio.TimerHandle | None = None
        timeout = consumer.spec.ack_timeout
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
        return True

    def _expire(self) -> None:
        if self._settle():
            log.warning(
                "ack timeout on %s in %s; returning its consumer's deliveries",
                self.message.message_id,
                self.queue,
            )
            self._consumer.reopen_soon()

    async def _safely(self, action: Any) -> None:
        # After a reconnect or an ack timeout the channel that delivered the message is gone and the
        # broker has already requeued it; settling it is moot, not an error.
        try:
            await action
        except (
            aio_pika.exceptions.ChannelInvalidStateError,
            aiormq.exceptions.AMQPError,
            RuntimeError,
        ) as error:
            log.info("could not settle %s: %s (the broker redelivers it)", self.message.message_id, error)

    async def ack(self) -> None:
        if self._settle():
            await self._safely(self._incoming.ack())

    async def nack(self, *, requeue: bool = True) -> None:
        if self._settle():
            await self._safely(self._incoming.nack(requeue=requeue))

    async def retry(self) -> None:
        if self._settled:
            return
        level = self.retries
        delays = self._consumer.spec.retry_delays
        if level >= len(delays):
            await self.nack(requeue=False)
            return
        again = self.message.with_headers(**{RETRIES_HEADER: level + 1})
        await self._consumer.bus.publish_to_queue(f"{self.queue}.retry.{level}", again)
        await self.ack()


class _RabbitConsumer(Subscription):
    def __init__(
        self,
        bus: RabbitBus,
        queue_name: str,
        spec: QueueSpec,
        handler: TaskHandler,
        prefetch: int,
        declare: dict[str, Any],
    ) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self.bus = bus
        self.queue_name = queue_name
        self.spec = spec
        self.handler = handler
        self.prefetch = prefetch
        self.declare = declare
        self.channel: AbstractChannel | None = None
        self.bindings: list[tuple[str, str]] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.active = True
        self._reopening: asyncio.Task[None] | None = None

    async def open(self) -> None:
        channel = await self.bus.connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        queue = await channel.declare_queue(self.queue_name, **self.declare)
        for exchange, pattern in self.bindings:
            await queue.bind(exchange, routing_key=pattern)
        await queue.consume(self._on_message)
        self.channel = channel

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        delivery = _RabbitDelivery(self, incoming)
        try:
            await self.handler(delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler failed on %s from %s", delivery.message.message_id, self.queue_name)
            await delivery.nack(requeue=True)
        else:
            await delivery.ack()
        finally:
            if task is not None:
                self.tasks.discard(task)

    def reopen_soon(self) -> None:
        if self._reopening is None or self._reopening.done():
            self._reopening = asyncio.get_running_loop().create_task(self._reopen())

    async def _reopen(self) -> None:
        channel, self.channel = self.channel, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()
        pause = self.bus.reconnect_interval
        while self.active:
            try:
                await self.open()
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # The broker may be away: the consumer must come back with it, not die here.
                log.warning(
                    "could not reopen the consumer of %s (%s); again in %.1f s", self.queue_name, error, pause
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)

    async def cancel(self) -> None:
        if not self.active:
            return
        self.active = False
        self.bus.forget(self)
        for task in list(self.tasks):
            task.cancel()
        # Closing the channel hands every unacked delivery back to the queue.
        if self.channel is not None:
            with contextlib.suppress(Exception):
                await self.channel.close()
            self.channel = None


class RabbitBus(Bus):
    """The bus on a RabbitMQ broker; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "tranche.events",
        dead_exchange: str = "tranche.dead",
        max_chunk_bytes: int | None = None,
        reconnect_interval: float = 1.0,
        publish_timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.exchange_name = exchange
        self.dead_exchange_name = dead_exchange
        if max_chunk_bytes is not None:
            self.max_chunk_bytes = max_chunk_bytes
        self.reconnect_interval = reconnect_interval
        self.publish_timeout = publish_timeout
        self._connection: AbstractRobustConnection | None = None
        self._specs: dict[str, QueueSpec] = {}
        self._consumers: set[_RabbitConsumer] = set()
        self._pending: dict[str, asyncio.Queue[AbstractIncomingMessage]] = {}
        self._reply_queue_name = f"tranche.reply.{uuid.uuid4().hex}"
        self._lost = False  # the connection dropped and has not come back yet

    # connection

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise BusClosedError("the bus is not started (or already closed)")
        return self._connection

    @property
    def connected(self) -> bool:
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    async def backlog(self) -> dict[str, int]:
        names = sorted({c.queue_name for c in self._consumers if c.declare.get("durable")})
        if not names:
            return {}
        found: dict[str, int] = {}
        channel = await self.connection.channel()
        try:
            for name in names:
                queue = await channel.declare_queue(name, passive=True)
                found[name] = int(queue.declaration_result.message_count or 0)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return found

    async def _connect(self) -> AbstractRobustConnection:
        """Connect, waiting for a broker that is not up yet (with a growing pause, up to 10 s); once
        connected, the robust connection reconnects by itself and restores channels, queues and consumers."""
        pause = self.reconnect_interval
        waiting = False
        while True:
            try:
                connection = await aio_pika.connect_robust(
                    self.url, reconnect_interval=self.reconnect_interval
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not waiting:
                    log.warning("waiting for the broker at %s (%s)", self._safe_url, error)
                    waiting = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)
                continue
            if waiting:
                log.info("connected to the broker at %s", self._safe_url)
            return connection

    @property
    def _safe_url(self) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 5672}{parts.path}"

    async def start(self) -> None:
        if self._connection is not None:
            return
        connection = await self._connect()
        connection.close_callbacks.add(self._on_connection_lost)
        connection.reconnect_callbacks.add(self._on_reconnected)
        self._connection = connection
        self._channel = await connection.channel(publisher_confirms=True)
        self._request_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        self._events: AbstractExchange = await self._channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._dead: AbstractExchange = await self._channel.declare_exchange(
            self.dead_exchange_name, aio_pika.ExchangeType.DIRECT, durable=True
        )
        replies = await self._request_channel.declare_queue(
            self._reply_queue_name, exclusive=True, auto_delete=True
        )
        await replies.consume(self._on_reply, no_ack=True)

    def _on_connection_lost(self, _sender: object, error: BaseException | None = None) -> None:
        if self._connection is not None and error is not None and not self._lost:
            self._lost = True
            log.warning(
                "lost the broker at %s (%s); reconnecting every %ss",
                self._safe_url,
                str(error) or type(error).__name__,
                self.reconnect_interval,
            )

    def _on_reconnected(self, _sender: object) -> None:
        self._lost = False
        log.info("reconnected to the broker at %s; queues and consumers restored", self._safe_url)

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.cancel()
        for waiting in self._pending.values():
            waiting.put_nowait(None)  # type: ignore[arg-type]
        connection, self._connection = self._connection, None  # a close of ours is no loss to report
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    def forget(self, consumer: _RabbitConsumer) -> None:
        self._consumers.discard(consumer)

    async def _publish(self, exchange: AbstractExchange, message: Message, routing_key: str) -> None:
        if self._connection is None:
            raise BusClosedError("the bus is not started (or already closed)")
        try:
            await exchange.publish(_to_amqp(message), routing_key=routing_key, timeout=self.publish_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise PublishError(
                f"{message.message_id} to {routing_key!r} was not confirmed: {type(error).__name__}: {error}",
                record=message.message_id,
            ) from error

    async def publish_to_queue(self, queue: str, message: Message) -> None:
        await self._publish(self._channel.default_exchange, message, queue)

    # publish / subscribe

    async def publish(self, message: Message) -> None:
        await self._publish(self._events, message, message.routing_key)

    async def publish_many(self, messages: Sequence[Message]) -> None:
        # The channel publishes in call order (aiormq holds a FIFO lock per frame set), so keeping many
        # confirms in flight keeps the order of the events and gets ~5x the throughput of one at a time.
        window = asyncio.Semaphore(_PUBLISH_WINDOW)

        async def one(message: Message) -> None:
            async with window:
                await self.publish(message)

        results = await asyncio.gather(*(one(m) for m in messages), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def subscribe(
        self,
        patterns: str | Sequence[str],
        handler: EventHandler,
        *,
        group: str | None = None,
        spec: QueueSpec | None = None,
        prefetch: int = 50,
    ) -> Subscription:
        wanted = [patterns] if isinstance(patterns, str) else list(patterns)
        private = group is None
        if group is None:
            name = f"tranche.sub.{uuid.uuid4().hex}"
            declare: dict[str, Any] = {"exclusive": True, "auto_delete": True}
            queue_spec = spec or QueueSpec()
        else:
            name = group
            queue_spec, declare = await self._ensure_queue(group, spec)

        async def on_delivery(delivery: Delivery) -> None:
            try:
                await handler(delivery.message)
            except Exception:
                if not private:
                    raise
                log.exception("subscriber failed on %s; dropped", delivery.message.message_id)

        consumer = _RabbitConsumer(self, name, queue_spec, on_delivery, prefetch, declare)
        # Bound through the consumer's own channel so that a reconnect restores the bindings of a private
        # queue too (it dies with the connection, unlike a group's durable queue and bindings).
        consumer.bindings = [(self.exchange_name, pattern) for pattern in wanted]
        await consumer.open()
        self._consumers.add(consumer)
        return consumer

    # tasks

    def _queue_arguments(self, queue: str, spec: QueueSpec) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": spec.max_deliveries - 1,
            "x-dead-letter-exchange": self.dead_exchange_name,
            "x-dead-letter-routing-key": queue,
        }

    async def declare_queue(self, queue: str, spec: QueueSpec | None = None) -> None:
        await self._ensure_queue(queue, spec)

    async def _ensure_queue(self, queue: str, spec: QueueSpec | None) -> tuple[QueueSpec, dict[str, Any]]:
        known = self._specs.get(queue)
        if known is not None and (spec is None or spec == known):
            return known, {"durable": True, "arguments": self._queue_arguments(queue, known)}
        spec = spec or QueueSpec()
        channel = await self.connection.channel()
        try:
            dead = await channel.declare_queue(f"{queue}.dead", durable=True)
            await dead.bind(self.dead_exchange_name, routing_key=queue)
            for level, delay in enumerate(spec.retry_delays):
                await channel.declare_queue(
                    f"{queue}.retry.{level}",
                    durable=True,
                    arguments={
                        "x-message-ttl": int(delay * 1000),
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": queue,
                    },
                )
            await channel.declare_queue(queue, durable=True, arguments=self._queue_arguments(queue, spec))
        except aiormq.exceptions.ChannelPreconditionFailed as error:
            raise BusError(
                f"queue {queue!r} exists with other settings than {spec}: {error}", record=queue
            ) from error
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        self._specs[queue] = spec
        return spec, {"durable": True, "arguments": self._queue_arguments(queue, spec)}

    async def send_task(self, queue: str, message: Message) -> None:
        if queue not in self._specs:
            await self._ensure_queue(queue, None)
        await self.publish_to_queue(queue, message)

    async def consume_tasks(self, queue: str, handler: TaskHandler, *, prefetch: int = 10) -> Subscription:
        spec, declare = await self._ensure_queue(queue, self._specs.get(queue))
        consumer = _RabbitConsumer(self, queue, spec, handler, prefetch, declare)
        await consumer.open()
        self._consumers.add(consumer)
        return consumer

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        await self._ensure_queue(queue, self._specs.get(queue))
        # Messages got without an ack go back to the queue, in place, when the channel closes.
        channel = await self.connection.channel()
        found: list[DeadLetter] = []
        try:
            dead = await channel.declare_queue(f"{queue}.dead", durable=True)
            while len(found) < limit:
                incoming = await dead.get(no_ack=False, fail=False)
                if incoming is None:
                    break
                found.append(_dead_letter(queue, incoming))
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return found

    async def replay_dead_letters(self, queue: str, *, limit: int | None = None) -> int:
        await self._ensure_queue(queue, self._specs.get(queue))
        channel = await self.connection.channel(publisher_confirms=True)
        moved = 0
        try:
            dead = await channel.declare_queue(f"{queue}.dead", durable=True)
            while limit is None or moved < limit:
                incoming = await dead.get(no_ack=False, fail=False)
                if incoming is None:
                    break
                again = _from_amqp(incoming).with_headers(**{RETRIES_HEADER: 0})
                # Published (and confirmed) before the ack: a crash in between duplicates, never loses.
                await channel.default_exchange.publish(_to_amqp(again), routing_key=queue)
                await incoming.ack()
                moved += 1
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return moved

    # request / response

    async def _on_reply(self, incoming: AbstractIncomingMessage) -> None:
        waiting = self._pending.get(incoming.correlation_id or "")
        if waiting is not None:
            waiting.put_nowait(incoming)

    def _service_queue(self, service: str) -> str:
        return f"tranche.rpc.{service}"

    async def _send_request(self, service: str, message: Message) -> asyncio.Queue[AbstractIncomingMessage]:
        if self._connection is None:
            raise BusClosedError("the bus is not started (or already closed)")
        waiting: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._pending[message.message_id] = waiting
        request = _to_amqp(message, persistent=False)
        request.reply_to = self._reply_queue_name
        request.correlation_id = message.message_id
        try:
            await self._request_channel.default_exchange.publish(
                request,
                routing_key=self._service_queue(service),
                mandatory=True,
                timeout=self.publish_timeout,
            )
        except aiormq.exceptions.PublishError:
            self._pending.pop(message.message_id, None)
            raise NoResponderError(f"nobody serves {service!r}", record=service) from None
        except Exception as error:
            self._pending.pop(message.message_id, None)
            raise PublishError(f"request to {service!r} not sent: {error}", record=service) from error
        return waiting

    async def _next_reply(
        self, waiting: asyncio.Queue[AbstractIncomingMessage], service: str, timeout: float
    ) -> Message:
        try:
            incoming = await asyncio.wait_for(waiting.get(), timeout)
        except TimeoutError:
            raise RequestTimeoutError(f"{service!r} did not answer in {timeout}s", record=service) from None
        if incoming is None:
            raise BusClosedError("the bus closed while waiting for an answer")
        reply = _from_amqp(incoming)
        error = reply.headers.get(ERROR_HEADER)
        if error == "chunk_too_large":
            raise ChunkTooLargeError(reply.body.decode(errors="replace"), record=service)
        if error is not None:
            raise RemoteError(reply.body.decode(errors="replace"), record=service)
        return reply

    async def request(self, service: str, message: Message, *, timeout: float = 5.0) -> Message:
        waiting = await self._send_request(service, message)
        try:
            return await self._next_reply(waiting, service, timeout)
        finally:
            self._pending.pop(message.message_id, None)

    async def request_stream(
        self, service: str, message: Message, *, timeout: float = 5.0
    ) -> AsyncIterator[Message]:
        waiting = await self._send_request(service, message)
        try:
            while True:
                reply = await self._next_reply(waiting, service, timeout)
                if reply.headers.get(LAST_CHUNK_HEADER):
                    return
                yield reply
        finally:
            self._pending.pop(message.message_id, None)

    async def _serve(self, service: str, answer: Any) -> Subscription:
        name = self._service_queue(service)

        async def on_request(delivery: Delivery) -> None:
            request = delivery.message
            # The reply address travels in the AMQP properties, which Message does not carry.
            reply_to = delivery.reply_to if isinstance(delivery, _RabbitDelivery) else None
            if reply_to:
                await answer(request, reply_to)
            await delivery.ack()

        declare = {"auto_delete": True}
        consumer = _RabbitConsumer(self, name, QueueSpec(), on_request, 10, declare)
        await consumer.open()
        self._consumers.add(consumer)
        return consumer

    async def _reply(
        self, reply_to: str, request: Message, body: Message | bytes, **headers: HeaderValue
    ) -> None:
        reply = body if isinstance(body, Message) else Message(body=body)
        out = _to_amqp(reply.with_headers(**headers) if headers else reply, persistent=False)
        out.correlation_id = request.message_id
        await self._channel.default_exchange.publish(out, routing_key=reply_to, timeout=self.publish_timeout)

    async def serve(self, service: str, responder: Responder) -> Subscription:
        async def answer(request: Message, reply_to: str) -> None:
            try:
                result = await responder(request)
            except Exception as error:
                await self._reply(
                    reply_to,
                    request,
                    f"{service!r} failed: {type(error).__name__}: {error}".encode(),
                    **{ERROR_HEADER: "remote"},
                )
                return
            await self._reply(reply_to, request, result)

        return await self._serve(service, answer)

    async def serve_stream(self, service: str, responder: StreamResponder) -> Subscription:
        async def answer(request: Message, reply_to: str) -> None:
            sequence = 0
            try:
                async for chunk in responder(request):
                    size = len(chunk.body if isinstance(chunk, Message) else chunk)
                    if size > self.max_chunk_bytes:
                        await self._reply(
                            reply_to,
                            request,
                            f"{service!r} sent a chunk of {size} bytes; the bound is {self.max_chunk_bytes}".encode(),
                            **{ERROR_HEADER: "chunk_too_large"},
                        )
                        return
                    await self._reply(reply_to, request, chunk, **{CHUNK_HEADER: sequence})
                    sequence += 1
            except Exception as error:
                await self._reply(
                    reply_to,
                    request,
                    f"{service!r} failed: {type(error).__name__}: {error}".encode(),
                    **{ERROR_HEADER: "remote"},
                )
                return
            await self._reply(reply_to, request, b"", **{LAST_CHUNK_HEADER: True})

        return await self._serve(service, answer)


def _dead_letter(queue: str, incoming: AbstractIncomingMessage) -> DeadLetter:
    headers = incoming.headers or {}
    reason: Any = headers.get("x-first-death-reason")
    dead_at = None
    deaths = headers.get("x-death")
    # x-death lists the latest death first; a retried message also died once per backoff ("expired").
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        latest = deaths[0]
        reason = latest.get("reason", reason)
        moment = latest.get("time")
        dead_at = moment if isinstance(moment, datetime) else None
    return DeadLetter(
        message=_from_amqp(incoming),
        queue=queue,
        reason=reason.decode() if isinstance(reason, bytes) else str(reason or "rejected"),
        dead_at=dead_at,
    )
