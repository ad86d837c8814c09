"""Subscriptions a process holds only while it owns a singleton job (:mod:`tranche.store.ownership`).

A standby must not consume the events of a job it does not own: a second matcher taking half of the events
is what ownership exists to prevent. :class:`OwnedSubscriber` wraps a subscriber (a function that
subscribes handlers on a bus) so that it subscribes when the claim is acquired, after ``prepare`` (such as
rebuilding the book from the store) has run, and cancels its subscriptions when the claim is lost. Events
that arrive meanwhile wait in the group's durable queue for whoever owns the job next.

    market = OwnedSubscriber(claim, subscribe_market, prepare=rebuild_books)
    await market(bus)        # as any subscriber, from the composition root's start_messaging
    ...
    await market.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tranche.bus.api import Bus, EventHandler
from tranche.bus.message import QueueSpec, Subscription
from tranche.store.ownership import Claim, Tenure

log = logging.getLogger("tranche.bus.owned")

Subscriber = Callable[[Bus], Awaitable[None]]


class _Recording:
    """A bus whose subscriptions are remembered, so that they can be cancelled together."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self.subscriptions: list[Subscription] = []

    async def subscribe(
        self,
        patterns: str | Sequence[str],
        handler: EventHandler,
        *,
        group: str | None = None,
        spec: QueueSpec | None = None,
        prefetch: int = 50,
    ) -> Subscription:
        subscription = await self._bus.subscribe(patterns, handler, group=group, spec=spec, prefetch=prefetch)
        self.subscriptions.append(subscription)
        return subscription

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)


class OwnedSubscriber:
    """A subscriber that is subscribed only while ``claim`` is held; see the module docstring.

    ``prepare(tenure)`` runs on a worker thread each time the claim is acquired, before subscribing; the
    claim's state is looked at every ``interval`` seconds.
    """

    def __init__(
        self,
        claim: Claim,
        subscribe: Subscriber,
        *,
        prepare: Callable[[Tenure], object] | None = None,
        interval: float = 0.2,
    ) -> None:
        self.claim = claim
        self.subscribe = subscribe
        self.prepare = prepare
        self.interval = interval
        self.active: Tenure | None = None
        self._subscriptions: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, bus: Bus) -> None:
        if self._task is None or self._task.done():
            await self._follow_once(bus)  # a claim held already is served before this returns
            self._task = asyncio.create_task(self._follow(bus), name=f"owned-{self.claim.job}")

    async def _follow(self, bus: Bus) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._follow_once(bus)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The next look tries again (the broker or the store may be away).
                log.exception("%s: could not follow the change of owner", self.claim.job)

    async def _follow_once(self, bus: Bus) -> None:
        tenure = self.claim.tenure
        if tenure == self.active:
            return
        if self.active is not None:
            await self._cancel()
            log.info("%s: no longer owned here; unsubscribed", self.claim.job)
            self.active = None
        if tenure is None:
            return
        if self.prepare is not None:
            await asyncio.to_thread(self.prepare, tenure)
        if self.claim.tenure != tenure:
            return  # lost while preparing: the next look sorts it out
        recording = _Recording(bus)
        try:
            await self.subscribe(recording)  # type: ignore[arg-type]
        finally:
            self._subscriptions = recording.subscriptions
        self.active = tenure
        log.info("%s: owned here (epoch %d); subscribed", self.claim.job, tenure.epoch)

    async def _cancel(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                await subscription.cancel()

    async def close(self) -> None:
        """Stop following the claim and cancel the subscriptions."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._cancel()
        self.active = None
