"""What travels on the bus: messages, deliveries of them to consumers, and the settings of a work queue."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from tranche.shared.ids import new_id

HeaderValue = str | int | bool | None

# Header names the bus itself uses; applications keep to their own names.
RETRIES_HEADER = "x-tranche-retries"
ERROR_HEADER = "x-tranche-error"
CHUNK_HEADER = "x-tranche-chunk"
LAST_CHUNK_HEADER = "x-tranche-last"


def _message_id() -> str:
    return new_id("msg")


@dataclass(frozen=True, slots=True)
class Message:
    """An immutable message: a body of bytes plus the properties every backend carries.

    ``routing_key`` is the topic of an event (``loan.L1.listed``); tasks and requests ignore it.
    ``message_id`` is unique per message and is what idempotent consumers remember; ``correlation_id`` ties
    a reply (or a chunk of one) to its request; ``type`` names the event or command in the body.
    """

    body: bytes
    routing_key: str = ""
    type: str = ""
    message_id: str = field(default_factory=_message_id)
    correlation_id: str | None = None
    headers: Mapping[str, HeaderValue] = field(default_factory=dict)
    content_type: str = "application/json"

    @classmethod
    def of_json(cls, value: Any, **properties: Any) -> Message:
        """A message whose body is ``value`` as compact UTF-8 JSON."""
        body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        return cls(body=body, **properties)

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def with_headers(self, **headers: HeaderValue) -> Message:
        return replace(self, headers={**self.headers, **headers})


class Delivery(ABC):
    """One delivery of a message to one consumer, to be settled exactly once.

    ``attempt`` counts deliveries of this message from its queue (1 on the first); ``redelivered`` is true
    when an earlier delivery was not acknowledged (a nack, a consumer that went away, an ack timeout).
    """

    message: Message
    redelivered: bool
    attempt: int
    queue: str

    @property
    def retries(self) -> int:
        """How many times :meth:`retry` has already sent this message round a delay."""
        value = self.message.headers.get(RETRIES_HEADER)
        return value if isinstance(value, int) else 0

    @property
    @abstractmethod
    def settled(self) -> bool:
        """True once acked, nacked, retried or dead-lettered (or taken back after an ack timeout)."""

    @abstractmethod
    async def ack(self) -> None:
        """The task is done; the queue forgets it."""

    @abstractmethod
    async def nack(self, *, requeue: bool = True) -> None:
        """Hand the task back at once (to this or another consumer); past the queue's delivery limit it goes
        to the dead-letter queue. ``requeue=False`` dead-letters it now."""

    @abstractmethod
    async def retry(self) -> None:
        """Try again later: the message waits out the next backoff delay of the queue, then comes back.
        When the queue's delays are used up the message is dead-lettered instead."""

    async def dead_letter(self) -> None:
        """Give up on the task: it goes to the dead-letter queue for an operator to inspect and replay."""
        await self.nack(requeue=False)


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """How a work queue treats its tasks.

    ``max_deliveries``: deliveries of one message (first one included) before it is dead-lettered.
    ``retry_delays``: seconds a message waits at each backoff level when a consumer calls ``retry()``;
    RabbitMQ holds one TTL queue per level, since per-message TTLs only expire at the head of a queue.
    ``ack_timeout``: seconds a consumer may hold a delivery unsettled before it is taken back and
    redelivered. The in-process bus enforces it per queue. RabbitMQ only has a server-wide
    ``consumer_timeout`` checked about once a minute, so ``RabbitBus`` enforces it in the consumer: when a
    delivery overruns, it closes that consumer's channel, which returns all of its unacked deliveries.
    """

    max_deliveries: int = 5
    retry_delays: tuple[float, ...] = (1.0, 10.0, 60.0)
    ack_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        if any(delay <= 0 for delay in self.retry_delays):
            raise ValueError("retry delays must be positive")
        if self.ack_timeout is not None and self.ack_timeout <= 0:
            raise ValueError("ack_timeout must be positive")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message in a dead-letter queue, as an operator inspects it."""

    message: Message
    queue: str
    reason: str  # "delivery_limit", "rejected" (nack without requeue, or retries used up), "expired"
    dead_at: datetime | None


class Subscription(ABC):
    """A running consumer (or responder). ``cancel()`` stops it; deliveries it has not settled go back to
    their queue and are redelivered to another consumer."""

    @abstractmethod
    async def cancel(self) -> None: ...
