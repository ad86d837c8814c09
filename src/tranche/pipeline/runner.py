"""The runner: claims due items stage by stage and moves them on, on one thread or many.

Each stage has its own claims and its own worker threads (``concurrency`` of them), so a stage whose
dependency is slow or down never holds up the stages before it. A stage's ``work`` runs outside any
transaction; its ``commit`` runs in the transaction that moves the item on, which is fenced by the lease.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, or_, select

from tranche.pipeline import store
from tranche.pipeline.breaker import CircuitBreaker
from tranche.pipeline.errors import PipelineDeclarationError
from tranche.pipeline.model import (
    LEASED,
    READY,
    RETRY_WAIT,
    Next,
    Pipeline,
    RetryableError,
    Stage,
    StageOverride,
    TerminalError,
    apply_override,
    override_key,
)
from tranche.pipeline.tables import pipeline_items
from tranche.shared.clock import Clock
from tranche.store.engine import reading

log = logging.getLogger(__name__)

# How long an idle worker thread waits before it looks for due items again (items may come from other
# processes, or come due by the clock); local enqueues wake it sooner.
IDLE_POLL_MIN = 0.02
IDLE_POLL_MAX = 0.25


class _LeaseLost(Exception):
    """The fenced transition found the item no longer leased under our token: roll everything back."""


@dataclass
class _StageRuntime:
    pipeline: Pipeline
    stage: Stage
    breaker: CircuitBreaker | None
    wake: threading.Event


@dataclass(frozen=True)
class Outcome:
    """What happened to one processed item (for counting and tests)."""

    item_id: str
    stage: str
    result: str  # succeeded, retry_scheduled, parked, failed, released, lease_lost


class PipelineRunner:
    """Runs the stages of ``pipelines`` against the store.

    ``owner`` names this process in leases (default host-pid-random). ``overrides`` replace declared stage
    settings, keyed by stage name or its environment spelling (see :func:`overrides_from_env`).
    ``partitions``, when not empty, limits this runner to items of those partitions (e.g. lender ids).
    """

    def __init__(
        self,
        engine: Engine,
        pipelines: Sequence[Pipeline],
        *,
        clock: Clock,
        owner: str | None = None,
        overrides: Mapping[str, StageOverride] | None = None,
        partitions: frozenset[str] = frozenset(),
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.partitions = frozenset(partitions)
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        by_key = {override_key(k): v for k, v in (overrides or {}).items()}
        self.pipelines: dict[str, Pipeline] = {}
        self._runtimes: list[_StageRuntime] = []
        self._by_stage: dict[str, _StageRuntime] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        for declared in pipelines:
            if declared.name in self.pipelines:
                raise PipelineDeclarationError(
                    f"pipeline {declared.name!r} given twice", record=declared.name
                )
            configured = Pipeline(
                declared.name, [apply_override(s, by_key.get(override_key(s.name))) for s in declared.stages]
            )
            self.pipelines[declared.name] = configured
            for stage in configured.stages:
                if stage.name in self._by_stage:
                    raise PipelineDeclarationError(
                        f"stage name {stage.name!r} is used by two pipelines", record=stage.name
                    )
                breaker = None
                if stage.dependency is not None:
                    breaker = self.breakers.setdefault(
                        stage.dependency, CircuitBreaker(stage.dependency, stage.breaker)
                    )
                runtime = _StageRuntime(configured, stage, breaker, threading.Event())
                self._runtimes.append(runtime)
                self._by_stage[stage.name] = runtime
        self._threads: list[threading.Thread] = []
        # Leases this runner holds, by item id, with their stage's lease length: the heartbeat renews them.
        self._held: dict[tuple[str, str], tuple[store.Lease, float]] = {}
        self._held_lock = threading.Lock()
        self._stopping = threading.Event()
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self.processed = 0
        self.lost_leases = 0

    # -- introspection ---------------------------------------------------------------------------------

    def stage(self, name: str) -> Stage:
        """The stage as this runner runs it (declaration plus overrides)."""
        return self._by_stage[name].stage

    def breaker_states(self) -> dict[str, str]:
        """Breaker state per stage name, for stages that declare a dependency."""
        return {rt.stage.name: rt.breaker.state for rt in self._runtimes if rt.breaker is not None}

    def notify(self, stage: str | None = None) -> None:
        """Wake idle workers (of one stage, or all) after enqueuing work from this process."""
        for rt in self._runtimes:
            if stage is None or rt.stage.name == stage:
                rt.wake.set()

    # -- single-threaded -------------------------------------------------------------------------------

    def run_until_idle(self, *, max_seconds: float | None = None) -> int:
        """Claim and process due items of every stage, on this thread, until nothing is due now.

        Items waiting for a future retry time, and stages whose breaker is open, do not count as due.
        Returns the number of items processed (whatever their outcome).
        """
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        total = 0
        while True:
            progressed = 0
            for rt in self._runtimes:
                progressed += self._claim_and_process(rt)
                if deadline is not None and time.monotonic() >= deadline:
                    return total + progressed
            total += progressed
            if progressed == 0:
                return total

    # -- threads ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start ``concurrency`` worker threads per stage."""
        if self._threads:
            return
        self._stopping.clear()
        for rt in self._runtimes:
            for n in range(rt.stage.concurrency):
                thread = threading.Thread(
                    target=self._worker, args=(rt,), name=f"pipeline-{rt.stage.name}-{n}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        heartbeat = threading.Thread(target=self._heartbeat, name="pipeline-heartbeat", daemon=True)
        self._threads.append(heartbeat)
        heartbeat.start()

    def stop(self, timeout: float = 10) -> None:
        """Ask the workers to finish their current item and wait for them up to ``timeout`` seconds."""
        self._stopping.set()
        self.notify()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads:
            log.warning("%d pipeline workers still busy after %.1fs", len(self._threads), timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no item of this runner's stages is due or in flight; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if self._in_flight == 0 and not self._anything_due():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def _anything_due(self) -> bool:
        t = pipeline_items
        now = self.clock.now()
        stages = [(rt.pipeline.name, rt.stage.name) for rt in self._runtimes]
        live = or_(
            t.c.status.in_((READY, LEASED)),
            and_(t.c.status == RETRY_WAIT, t.c.next_run_at <= now),
        )
        query = select(t.c.id).where(live, or_(*(and_(t.c.pipeline == p, t.c.stage == s) for p, s in stages)))
        if self.partitions:
            query = query.where(t.c.partition.in_(sorted(self.partitions)))
        with reading(self.engine) as conn:
            return conn.execute(query.limit(1)).first() is not None

    def _heartbeat(self) -> None:
        """Renew held leases every third of the shortest lease, so that long ``work`` keeps its items; a
        killed process stops renewing and its items are taken over when the leases run out."""
        period = max(min(rt.stage.lease_seconds for rt in self._runtimes) / 3, 0.05)
        while not self._stopping.wait(period):
            with self._held_lock:
                held = list(self._held.values())
            if not held:
                continue
            now = self.clock.now()
            try:
                with self.engine.begin() as conn:
                    for seconds in sorted({s for _, s in held}):
                        store.renew(
                            conn,
                            [lease for lease, s in held if s == seconds],
                            now + timedelta(seconds=seconds),
                        )
            except Exception:
                log.exception("could not renew pipeline leases; retrying")

    def _worker(self, rt: _StageRuntime) -> None:
        idle = IDLE_POLL_MIN
        while not self._stopping.is_set():
            # Cleared before looking, so that a wake-up sent while we look is not lost.
            rt.wake.clear()
            try:
                done = self._claim_and_process(rt)
            except Exception:
                # The store itself failed (connection lost, ...): keep the worker alive and try again.
                log.exception("pipeline worker for %s failed; retrying", rt.stage.name)
                done = 0
                idle = IDLE_POLL_MAX
            if done:
                idle = IDLE_POLL_MIN
                continue
            wait = idle
            if rt.breaker is not None:
                reopen = rt.breaker.retry_at()
                if reopen is not None:
                    wait = min(max((reopen - self.clock.now()).total_seconds(), IDLE_POLL_MIN), IDLE_POLL_MAX)
            rt.wake.wait(wait)
            idle = min(idle * 2, IDLE_POLL_MAX)

    # -- the work --------------------------------------------------------------------------------------

    def _claim_and_process(self, rt: _StageRuntime) -> int:
        wanted = rt.stage.claim_batch
        probing = False
        if rt.breaker is not None:
            wanted = rt.breaker.permit(self.clock.now(), wanted)
            if wanted == 0:
                return 0
            probing = rt.breaker.state != "closed"
        with self._in_flight_lock:
            self._in_flight += 1
        leases: list[store.Lease] = []
        try:
            # One connection for the claim and the batch's transitions: a checkout per transaction costs a
            # pool round trip (and a ping on PostgreSQL). No transaction is open while ``work`` runs.
            with self.engine.connect() as conn:
                try:
                    with conn.begin():
                        leases = store.claim(
                            conn,
                            rt.pipeline,
                            rt.stage,
                            owner=self.owner,
                            now=self.clock.now(),
                            limit=wanted,
                            partitions=self.partitions,
                        )
                finally:
                    if probing and not leases and rt.breaker is not None:
                        rt.breaker.cancel_probe()  # nothing to probe with
                with self._held_lock:
                    for lease in leases:
                        self._held[(lease.item.id, lease.token)] = (lease, rt.stage.lease_seconds)
                try:
                    for lease in leases:
                        try:
                            if rt.breaker is not None and not rt.breaker.allows_more():
                                self._finish(
                                    rt, conn, lease, "released", self._release, "circuit open: handed back"
                                )
                            else:
                                self._process(rt, conn, lease)
                        finally:
                            with self._held_lock:
                                self._held.pop((lease.item.id, lease.token), None)
                finally:
                    with self._held_lock:
                        for lease in leases:
                            self._held.pop((lease.item.id, lease.token), None)
                return len(leases)
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1

    def _process(self, rt: _StageRuntime, conn: Connection, lease: store.Lease) -> Outcome:
        stage = rt.stage
        item = lease.item
        if item.attempt > stage.retry.max_attempts:
            # Only lease expiries get here: the item keeps killing or outliving its workers.
            error = f"lease lost {item.attempt - 1} times (max_attempts {stage.retry.max_attempts})"
            return self._finish(rt, conn, lease, "parked", self._park, error)
        try:
            result = stage.work(item) if stage.work is not None else None
            with conn.begin():
                nxt = stage.commit(conn, item, result)
                if not store.complete(conn, rt.pipeline, lease, nxt, self.clock.now()):
                    raise _LeaseLost
        except _LeaseLost:
            return self._lost(lease)
        except TerminalError as exc:
            if rt.breaker is not None:
                rt.breaker.success()  # the dependency answered, if only to say no
            return self._finish(rt, conn, lease, "failed", self._fail, exc.message)
        except RetryableError as exc:
            if rt.breaker is not None:
                if exc.dependency_down:
                    rt.breaker.failure(self.clock.now())
                else:
                    rt.breaker.cancel_probe()
            return self._retry(rt, conn, lease, exc.message, exc.retry_after)
        except Exception as exc:
            # A bug must not lose work: retry like a transient failure, keep where it happened.
            if rt.breaker is not None:
                rt.breaker.cancel_probe()
            summary = "".join(traceback.format_exception(exc, limit=-3)).strip()
            log.warning("stage %s item %s raised %s", stage.name, item.id, type(exc).__name__)
            return self._retry(rt, conn, lease, f"{type(exc).__name__}: {exc}\n{summary}", None)
        if rt.breaker is not None:
            rt.breaker.success()
        self._count()
        self._wake_next(rt, nxt)
        return Outcome(item.id, stage.name, "succeeded")

    def _wake_next(self, rt: _StageRuntime, nxt: Next) -> None:
        """Wake the stages that an item just moved on has given work: where it went, where its children
        went, and the ordered stages of its pipeline, whose next items may have waited for it."""
        for name in {nxt.stage, *(child.stage for child in nxt.children)}:
            if name is not None and name in self._by_stage:
                self._by_stage[name].wake.set()
        stages = rt.pipeline.stages
        if rt.stage.ordered or any(s.ordered for s in stages):
            for rt_other in self._runtimes:
                if rt_other.pipeline is rt.pipeline and rt_other.stage.ordered:
                    rt_other.wake.set()

    def _retry(
        self, rt: _StageRuntime, conn: Connection, lease: store.Lease, error: str, retry_after: float | None
    ) -> Outcome:
        policy = rt.stage.retry
        if lease.item.attempt >= policy.max_attempts:
            return self._finish(
                rt,
                conn,
                lease,
                "parked",
                self._park,
                f"attempt {lease.item.attempt}/{policy.max_attempts}: {error}",
            )
        with self._rng_lock:
            delay = policy.delay(lease.item.attempt, retry_after, self._rng)

        def schedule(tx: Connection, lease: store.Lease, error: str, now: datetime) -> bool:
            run_at = now + timedelta(seconds=delay)
            return store.schedule_retry(tx, lease, error=error, run_at=run_at, now=now)

        return self._finish(rt, conn, lease, "retry_scheduled", schedule, error)

    @staticmethod
    def _park(conn: Any, lease: store.Lease, error: str, now: datetime) -> bool:
        return store.park(conn, lease, error=error, now=now)

    @staticmethod
    def _fail(conn: Any, lease: store.Lease, error: str, now: datetime) -> bool:
        return store.fail(conn, lease, reason=error, now=now)

    @staticmethod
    def _release(conn: Any, lease: store.Lease, error: str, now: datetime) -> bool:
        return store.release(conn, lease, reason=error, now=now)

    def _finish(
        self,
        rt: _StageRuntime,
        conn: Connection,
        lease: store.Lease,
        result: str,
        transition: Callable[[Any, store.Lease, str, datetime], bool],
        error: str,
    ) -> Outcome:
        with conn.begin():
            ok = transition(conn, lease, error, self.clock.now())
        if not ok:
            return self._lost(lease)
        if result != "released":
            self._count()
        return Outcome(lease.item.id, rt.stage.name, result)

    def _count(self) -> None:
        with self._in_flight_lock:
            self.processed += 1

    def _lost(self, lease: store.Lease) -> Outcome:
        with self._in_flight_lock:
            self.lost_leases += 1
        log.warning(
            "item %s at %s: lease taken over by another worker; our transition was rolled back",
            lease.item.id,
            lease.item.stage,
        )
        return Outcome(lease.item.id, lease.item.stage, "lease_lost")
