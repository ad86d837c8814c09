"""Feeding a context's handlers from the bus: one durable subscription per consumer group.

:func:`subscribe_handlers` subscribes the topics of every event class in a bound handler map (see
:func:`tranche.shared.messages.bind`) as one group, decodes each delivery with the codec and runs the handlers
of its class, in order, on a worker thread (handlers are blocking: they talk to the store). A handler that
raises leaves the delivery unacknowledged, so the bus delivers it again (up to the group's limit, then to its
dead-letter queue); handlers are idempotent, so the ones that had already run change nothing the second time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from tranche.bus.api import Bus
from tranche.bus.codec import EventCodec
from tranche.bus.message import Message, Subscription
from tranche.shared.messages import BoundHandler, Event


def topic_patterns(event_types: Sequence[type]) -> list[str]:
    """The bus patterns that receive every event of these classes, each once, in a stable order."""
    patterns: dict[str, None] = {}
    for event_type in event_types:
        if not issubclass(event_type, Event):
            raise TypeError(f"{event_type.__name__} is not an Event: it has no topic to subscribe to")
        patterns.update(dict.fromkeys(event_type.topic_patterns()))
    return list(patterns)


async def subscribe_handlers(
    bus: Bus,
    codec: EventCodec,
    handlers: Mapping[type, Sequence[BoundHandler]],
    *,
    group: str,
    prefetch: int = 1,
) -> Subscription:
    """Subscribe ``handlers`` (events only) to the bus as the durable group ``group``.

    ``prefetch`` 1 (the default) hands the group's events to its handlers one at a time, in the order they were
    published, which is what handlers that depend on order (a funding after its match) need.
    """
    types = list(handlers)
    for event_type in types:
        codec.register(event_type)

    async def handle(message: Message) -> None:
        event = codec.from_message(message)
        for handler in handlers.get(type(event), ()):
            await asyncio.to_thread(handler, event)

    return await bus.subscribe(topic_patterns(types), handle, group=group, prefetch=prefetch)
