"""Transactional outbox and idempotent inbox.

A state change and the event describing it commit together: ``add_to_outbox(conn, topic, event)`` writes
the event in the caller's transaction. An :class:`OutboxRelay` publishes unpublished rows in order and marks
each published once the broker has confirmed it; if the process dies between commit and publish, or the
broker is away, the rows stay unpublished and go out on the next pass. That is at-least-once: an event
whose confirm was lost is published again. Consumers therefore remember what they handled
(``already_handled`` / ``mark_handled``, or :func:`handle_once`) in the same transaction as its effect, so
a redelivered event has no second effect.

Run one relay per database: two would not lose events, but could publish some twice and out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from tranche.bus.api import Bus
from tranche.bus.codec import EventCodec, encode
from tranche.bus.errors import BusError
from tranche.bus.message import HeaderValue, Message
from tranche.bus.tables import bus_inbox, bus_outbox
from tranche.shared.clock import Clock, SystemClock
from tranche.shared.ids import new_id

log = logging.getLogger("tranche.bus.outbox")


def add_to_outbox(
    conn: Connection,
    topic: str,
    event: object,
    *,
    codec: EventCodec | None = None,
    event_id: str | None = None,
    headers: Mapping[str, HeaderValue] | None = None,
    now: datetime | None = None,
) -> str:
    """Write ``event`` (a frozen dataclass, or a ready :class:`Message`) to the outbox in ``conn``'s
    transaction, to be published under ``topic``; returns its event id (the message id consumers see)."""
    if isinstance(event, Message):
        type_name, payload = event.type, event.body
        event_id = event_id or event.message_id
        headers = {**event.headers, **(headers or {})}
    else:
        type_name = codec.type_name(event) if codec is not None else type(event).__name__
        payload = encode(event)
        event_id = event_id or new_id("evt")
    conn.execute(
        insert(bus_outbox).values(
            event_id=event_id,
            topic=topic,
            type=type_name,
            payload=payload,
            headers=json.dumps(dict(headers)) if headers else None,
            created_at=now or datetime.now(UTC),
            published_at=None,
        )
    )
    return event_id


def unpublished_count(conn: Connection) -> int:
    """How many outbox rows wait for the relay."""
    count = conn.execute(
        select(func.count()).select_from(bus_outbox).where(bus_outbox.c.published_at.is_(None))
    ).scalar_one()
    return int(count)


def already_handled(conn: Connection, consumer: str, event_id: str) -> bool:
    """True when ``consumer`` has recorded handling ``event_id``."""
    found = conn.execute(
        select(bus_inbox.c.event_id).where(bus_inbox.c.consumer == consumer, bus_inbox.c.event_id == event_id)
    ).first()
    return found is not None


def mark_handled(conn: Connection, consumer: str, event_id: str, *, now: datetime | None = None) -> None:
    """Record, in ``conn``'s transaction, that ``consumer`` handled ``event_id``. A second mark of the same
    pair violates the primary key, so two racing deliveries cannot both commit their effect."""
    conn.execute(
        insert(bus_inbox).values(consumer=consumer, event_id=event_id, handled_at=now or datetime.now(UTC))
    )


def handle_once(engine: Engine, consumer: str, event_id: str, apply: Callable[[Connection], Any]) -> bool:
    """Run ``apply`` and record the event in one transaction, unless ``consumer`` already handled it.
    Returns whether ``apply`` ran. Blocking: from async code, call it through ``asyncio.to_thread``."""
    with engine.begin() as conn:
        if already_handled(conn, consumer, event_id):
            return False
        apply(conn)
        mark_handled(conn, consumer, event_id)
    return True


class OutboxRelay:
    """Publishes the outbox in order; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        bus: Bus,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.1,
        retry_interval: float = 0.5,
        clock: Clock | None = None,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retry_interval = retry_interval
        self.clock: Clock = clock or SystemClock()
        self.published = 0
        self.failures = 0

    def _pending(self) -> list[tuple[int, Message]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(bus_outbox)
                .where(bus_outbox.c.published_at.is_(None))
                .order_by(bus_outbox.c.seq)
                .limit(self.batch_size)
            ).all()
        return [
            (
                row.seq,
                Message(
                    body=bytes(row.payload),
                    routing_key=row.topic,
                    type=row.type,
                    message_id=row.event_id,
                    headers=json.loads(row.headers) if row.headers else {},
                ),
            )
            for row in rows
        ]

    def _mark(self, seqs: list[int]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(bus_outbox)
                .where(bus_outbox.c.seq.in_(seqs), bus_outbox.c.published_at.is_(None))
                .values(published_at=self.clock.now())
            )

    async def run_once(self) -> int:
        """Publish one batch of unpublished rows; returns how many were published. Raises the bus's error
        when the broker did not confirm them all (they stay unpublished)."""
        pending = await asyncio.to_thread(self._pending)
        if not pending:
            return 0
        await self.bus.publish_many([message for _, message in pending])
        await asyncio.to_thread(self._mark, [seq for seq, _ in pending])
        self.published += len(pending)
        return len(pending)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until ``stop`` is set (or the task is cancelled), riding out broker outages."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                sent = await self.run_once()
            except BusError as error:
                self.failures += 1
                log.warning("outbox relay: %s; retrying in %ss", error, self.retry_interval)
                await _sleep_or_stop(stop, self.retry_interval)
                continue
            if sent < self.batch_size:
                await _sleep_or_stop(stop, self.poll_interval)

    async def drain(self) -> int:
        """Publish until the outbox is empty (propagating bus errors); returns how many were published."""
        total = 0
        while True:
            sent = await self.run_once()
            total += sent
            if sent == 0:
                return total


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
