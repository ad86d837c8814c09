"""A circuit breaker per external dependency, shared by the stages of this process that call it.

Closed: stages claim freely. After ``failure_threshold`` consecutive failures that say the dependency is down
it opens: its stages claim nothing, so no attempt is spent on a service known to be down. After a cool-down
it lets exactly one probe item through (half-open); success closes it, failure opens it again with a longer
cool-down (doubled, up to ``max_cooldown``). The caller passes the time in, so the breaker reads no clock.

The breaker also says whom a failure is to be blamed on. A failure that follows a success (or comes first) may
be the item's own doing, and spends one of the item's attempts. A failure that follows another failure, and
every failed probe, says the dependency is down: the item's attempt is given back. So an outage, however long,
spends at most one attempt of the first item that met it, and parks nothing; an item that fails while others
succeed still spends an attempt each time and is parked after its stage's ``max_attempts``.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from tranche.pipeline.model import BreakerPolicy

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """Thread-safe; ``permit`` says how many items a stage may claim now."""

    def __init__(self, name: str, policy: BreakerPolicy) -> None:
        self.name = name
        self.policy = policy
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at: datetime | None = None
        self._cooldown = policy.cooldown
        self._probe_out = False
        self.opened_count = 0

    @property
    def state(self) -> str:
        return self._state

    def retry_at(self) -> datetime | None:
        """When an open breaker will let a probe through (None unless open)."""
        with self._lock:
            if self._state != OPEN or self._opened_at is None:
                return None
            return self._opened_at + timedelta(seconds=self._cooldown)

    def permit(self, now: datetime, wanted: int) -> int:
        """How many items may be claimed now: ``wanted`` when closed, 1 for the probe, else 0.

        A caller granted the probe must end it with :meth:`success`, :meth:`failure` or :meth:`cancel_probe`.
        """
        with self._lock:
            if self._state == CLOSED:
                return wanted
            if self._state == OPEN:
                assert self._opened_at is not None
                if now < self._opened_at + timedelta(seconds=self._cooldown):
                    return 0
                self._state = HALF_OPEN
            if self._probe_out:
                return 0
            self._probe_out = True
            return 1

    def allows_more(self) -> bool:
        """Whether a worker holding claimed items may go on calling the dependency."""
        return self._state != OPEN

    def success(self) -> None:
        """The dependency answered: close."""
        with self._lock:
            self._state = CLOSED
            self._failures = 0
            self._probe_out = False
            self._cooldown = self.policy.cooldown

    def failure(self, now: datetime) -> bool:
        """The dependency looked down (a retryable failure with ``dependency_down``).

        Returns whether the failure is to be blamed on the item that met it: True only for a failure that
        follows a success (or none at all) while the breaker is closed.
        """
        with self._lock:
            if self._state == HALF_OPEN:
                self._probe_out = False
                self._cooldown = min(self._cooldown * 2, self.policy.max_cooldown)
                self._open(now)
                return False
            if self._state == OPEN:
                return False
            self._failures += 1
            isolated = self._failures == 1
            if self._failures >= self.policy.failure_threshold:
                self._open(now)
            return isolated

    def cancel_probe(self) -> None:
        """The probe found nothing to do or ended without telling anything about the dependency."""
        with self._lock:
            self._probe_out = False

    def _open(self, now: datetime) -> None:
        self._state = OPEN
        self._opened_at = now
        self._failures = 0
        self.opened_count += 1
