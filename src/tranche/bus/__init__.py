"""The message bus: one interface, an in-process backend and a RabbitMQ backend, and the outbox.

``connect(url)`` picks the backend from ``TRANCHE_BUS_URL``: ``memory://`` for :class:`InProcessBus`,
``amqp://`` (or ``amqps://``) for :class:`RabbitBus`. The bus it returns is not connected yet; ``await
bus.start()`` (or ``async with bus``) does that.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from tranche.bus.api import Bus, EventHandler, Responder, StreamResponder, TaskHandler
from tranche.bus.codec import EventCodec
from tranche.bus.errors import (
    BusClosedError,
    BusError,
    ChunkTooLargeError,
    CodecError,
    NoResponderError,
    PublishError,
    RemoteError,
    RequestTimeoutError,
    UnknownEventTypeError,
    UnsupportedBusUrlError,
)
from tranche.bus.memory import InProcessBus
from tranche.bus.message import DeadLetter, Delivery, Message, QueueSpec, Subscription

__all__ = [
    "Bus",
    "BusClosedError",
    "BusError",
    "ChunkTooLargeError",
    "CodecError",
    "DeadLetter",
    "Delivery",
    "EventCodec",
    "EventHandler",
    "InProcessBus",
    "Message",
    "NoResponderError",
    "PublishError",
    "QueueSpec",
    "RemoteError",
    "RequestTimeoutError",
    "Responder",
    "StreamResponder",
    "Subscription",
    "TaskHandler",
    "UnknownEventTypeError",
    "UnsupportedBusUrlError",
    "connect",
]


def connect(url: str) -> Bus:
    """The bus for ``url`` (``memory://`` or ``amqp://user:pass@host:port/vhost``), not yet started."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        # The embedded deployment's bus: a publish is confirmed once handled, so that the outbox keeps what a
        # crash would lose from the process's queues.
        return InProcessBus(url, confirm_handled=True)
    if scheme in ("amqp", "amqps"):
        # Imported here so that the embedded mode never loads aio-pika.
        from tranche.bus.rabbit import RabbitBus

        return RabbitBus(url)
    raise UnsupportedBusUrlError(
        f"no bus backend for {url!r}; use memory:// or amqp://", field="TRANCHE_BUS_URL"
    )
