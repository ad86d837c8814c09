"""Transactional outbox and idempotent inbox.

A state change and the event describing it commit together: ``add_to_outbox(conn, topic, event)`` writes
the event in the caller's transaction. An :class:`OutboxRelay` publishes unpublished rows in order and marks
each published once the broker has confirmed it; if the process dies between commit and publish, or the
broker is away, the rows stay unpublished and go out on the next pass. That is at-least-once: an event
whose confirm was lost is published again. Consumers therefore remember what they handled
(``already_handled`` / ``mark_handled``, or :func:`handle_once`) in the same transaction as its effect, so
a redelivered event has no second effect.

One relay publishes at a time, whatever the number of processes: every process that runs messaging claims
the job ``outbox-relay`` (:mod:`tranche.store.ownership`); its owner relays and the others stand by, taking
over within seconds when it dies. The owner marks rows published in a transaction fenced by its epoch, so a
relay that lost the job stops at its next batch; only the batch in flight at a takeover can go out twice.

The relay rides out outages of the broker and of the database alike: it waits with a growing pause (up to
``max_backoff`` seconds), says in the log what it waits for, and goes on where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from tranche.bus.api import Bus
from tranche.bus.codec import EventCodec, encode
from tranche.bus.errors import BusError
from tranche.bus.message import HeaderValue, Message
from tranche.bus.tables import bus_inbox, bus_outbox
from tranche.shared.clock import Clock, SystemClock
from tranche.shared.ids import new_id
from tranche.store.engine import reading
from tranche.store.ownership import Claim, OwnershipLostError

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


def outbox_lag(conn: Connection, now: datetime) -> tuple[int, float]:
    """How many rows wait for the relay, and how many seconds the oldest of them has waited."""
    count, oldest = conn.execute(
        select(func.count(), func.min(bus_outbox.c.created_at)).where(bus_outbox.c.published_at.is_(None))
    ).one()
    if not count or oldest is None:
        return 0, 0.0
    if oldest.tzinfo is None:  # SQLite gives naive UTC back
        oldest = oldest.replace(tzinfo=UTC)
    return int(count), max(0.0, (now - oldest).total_seconds())


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
    """Publishes the outbox in order; see the module docstring.

    With a ``claim`` (of the job ``outbox-relay``) it relays only while it owns the job; without one the
    caller vouches that no other relay runs on the database (a test, a one-off drain).
    """

    def __init__(
        self,
        engine: Engine,
        bus: Bus,
        *,
        claim: Claim | None = None,
        batch_size: int = 500,
        poll_interval: float = 0.1,
        retry_interval: float = 0.5,
        max_backoff: float = 5.0,
        progress_interval: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.claim = claim
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retry_interval = retry_interval
        self.max_backoff = max_backoff
        self.progress_interval = progress_interval
        self.clock: Clock = clock or SystemClock()
        self.published = 0
        self.failures = 0
        self.waiting_for: str | None = None  # "the broker" or "the database" while it waits for one

    def _pending(self) -> list[tuple[int, Message]]:
        with reading(self.engine) as conn:
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
            if self.claim is not None:
                self.claim.fence(conn)
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
        """Relay until ``stop`` is set (or the task is cancelled), riding out outages of the broker and of
        the database, and standing by while another process owns the job."""
        stop = stop or asyncio.Event()
        pause = self.retry_interval
        standing_by = False
        reported = (time.monotonic(), self.published)
        while not stop.is_set():
            if self.claim is not None and not self.claim.held:
                if not standing_by:
                    holder = self.claim.state().holder
                    log.info("outbox relay: standby%s", f" (relayed by {holder})" if holder else "")
                    standing_by = True
                await _sleep_or_stop(stop, self.poll_interval * 2)
                continue
            if standing_by:
                log.info("outbox relay: relaying (this process owns outbox-relay)")
                standing_by = False
            try:
                sent = await self.run_once()
            except OwnershipLostError as error:
                log.warning("outbox relay: %s", error)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.failures += 1
                self._waiting(error, pause)
                await _sleep_or_stop(stop, pause)
                pause = min(pause * 2, self.max_backoff)
                continue
            if self.waiting_for is not None:
                log.info("outbox relay: %s is back; relaying again", self.waiting_for)
                self.waiting_for = None
            pause = self.retry_interval
            if time.monotonic() - reported[0] >= self.progress_interval:
                if self.published != reported[1]:
                    log.info(
                        "outbox relay: published %d events in the last %.0f s (%d in all)",
                        self.published - reported[1],
                        time.monotonic() - reported[0],
                        self.published,
                    )
                reported = (time.monotonic(), self.published)
            if sent < self.batch_size:
                await _sleep_or_stop(stop, self.poll_interval)

    def _waiting(self, error: Exception, pause: float) -> None:
        if isinstance(error, BusError):
            what = "the broker"
        elif isinstance(error, SQLAlchemyError | OSError):
            what = "the database"
        else:
            what = "a failure to pass"
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        if self.waiting_for != what:
            self.waiting_for = what
            if what == "a failure to pass":
                log.error("outbox relay: unexpected failure; retrying with backoff", exc_info=error)
            else:
                log.warning("outbox relay: waiting for %s (%s); retrying with backoff", what, detail)
        else:
            log.info("outbox relay: still waiting for %s (%s); next try in %.1f s", what, detail, pause)

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
