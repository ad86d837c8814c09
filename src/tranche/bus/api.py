"""The bus every component talks through; one interface, two backends (in-process and RabbitMQ).

Patterns, each a pair of methods:

- publish/subscribe by topic: ``publish`` / ``subscribe``. Topics are dot-separated words; a pattern's ``*``
  matches one word and ``#`` zero or more (``loan.*.listed``, ``loan.#``). A subscription with a ``group``
  reads a durable queue shared by every subscriber of that group (competing consumers, at-least-once, with
  the group's delivery limit and dead-letter queue); without a group it is a private, transient queue.
  Many publishers → one collector is a group subscribed to ``#`` (or a family of topics).
- task distribution: ``send_task`` / ``consume_tasks`` on a named work queue, with ``declare_queue``
  setting its :class:`QueueSpec`; ``dead_letters`` and ``replay_dead_letters`` for the operator.
- request/response: ``serve`` / ``request``, with a timeout and :class:`NoResponderError` when nobody serves.
- chunked response: ``serve_stream`` / ``request_stream``, an async iterator of bounded chunks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType

from tranche.bus.message import DeadLetter, Delivery, Message, QueueSpec, Subscription

EventHandler = Callable[[Message], Awaitable[None]]
TaskHandler = Callable[[Delivery], Awaitable[None]]
Responder = Callable[[Message], Awaitable[Message | bytes]]
StreamResponder = Callable[[Message], AsyncIterator[Message | bytes]]

DEFAULT_MAX_CHUNK_BYTES = 256 * 1024


class Bus(ABC):
    """A message bus. ``start()`` before use (or ``async with``); nothing connects on construction."""

    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES

    @abstractmethod
    async def start(self) -> None:
        """Connect (RabbitMQ) or get ready (in-process)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop every subscription and disconnect; unsettled deliveries go back to their queues."""

    @property
    def connected(self) -> bool:
        """Whether the bus can carry messages now (for RabbitMQ: the broker is reachable)."""
        return True

    async def backlog(self) -> dict[str, int]:
        """How many messages wait in each durable queue this bus consumes from (its subscription groups and
        work queues): the consumers' lag."""
        return {}

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # publish / subscribe

    @abstractmethod
    async def publish(self, message: Message) -> None:
        """Publish an event under ``message.routing_key``; returns once the broker has it (confirmed)."""

    async def publish_many(self, messages: Sequence[Message]) -> None:
        """Publish several events in order; returns once all are confirmed, raises if any is not."""
        for message in messages:
            await self.publish(message)

    @abstractmethod
    async def subscribe(
        self,
        patterns: str | Sequence[str],
        handler: EventHandler,
        *,
        group: str | None = None,
        spec: QueueSpec | None = None,
        prefetch: int = 50,
    ) -> Subscription:
        """Call ``handler`` for each event whose topic matches one of ``patterns``.

        The event is acknowledged when the handler returns. If it raises, a group's event is redelivered
        (up to the group's delivery limit, then dead-lettered to ``<group>.dead``); a private
        subscription's event is dropped and logged.
        """

    # task distribution

    @abstractmethod
    async def declare_queue(self, queue: str, spec: QueueSpec | None = None) -> None:
        """Create the work queue ``queue`` (with its retry levels and dead-letter queue) if it is missing."""

    @abstractmethod
    async def send_task(self, queue: str, message: Message) -> None:
        """Put a task on a work queue; returns once the broker has it (confirmed)."""

    @abstractmethod
    async def consume_tasks(self, queue: str, handler: TaskHandler, *, prefetch: int = 10) -> Subscription:
        """Compete for the tasks of ``queue``: at most ``prefetch`` unsettled deliveries at a time, handed out
        round robin among consumers. The handler settles each delivery (ack, nack, retry, dead_letter);
        one it leaves unsettled is acked when it returns and nacked (redelivered) when it raises."""

    @abstractmethod
    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` messages in the dead-letter queue of ``queue``, left in place."""

    @abstractmethod
    async def replay_dead_letters(self, queue: str, *, limit: int | None = None) -> int:
        """Move up to ``limit`` (default all) dead letters back onto ``queue``, oldest first, with a fresh
        delivery count; returns how many moved."""

    # request / response

    @abstractmethod
    async def serve(self, service: str, responder: Responder) -> Subscription:
        """Answer requests to ``service``; several responders of one service share the requests."""

    @abstractmethod
    async def request(self, service: str, message: Message, *, timeout: float = 5.0) -> Message:
        """Send a request and wait for the answer.

        Raises :class:`NoResponderError` when nobody serves ``service``, :class:`RequestTimeoutError` after
        ``timeout`` seconds, :class:`RemoteError` when the responder failed."""

    @abstractmethod
    async def serve_stream(self, service: str, responder: StreamResponder) -> Subscription:
        """Answer requests to ``service`` with a stream of chunks, each at most ``max_chunk_bytes``."""

    @abstractmethod
    def request_stream(
        self, service: str, message: Message, *, timeout: float = 5.0
    ) -> AsyncIterator[Message]:
        """Send a request and iterate over the chunks of the answer, in order. ``timeout`` bounds the wait
        for each chunk; errors are those of :meth:`request` plus :class:`ChunkTooLargeError`."""
