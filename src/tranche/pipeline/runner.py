"""The runner: claims due items stage by stage and moves them on, on one thread or many.

Each stage has its own claims and its own worker threads (``concurrency`` of them), so a stage whose
dependency is slow or down never holds up the stages before it. A stage's ``work`` runs outside any
transaction; its ``commit`` runs in the transaction that moves the item on, which is fenced by the lease.

A started runner registers itself as a worker (``pipeline_workers``) and beats every couple of seconds; the
beat also hands back the leases of gone workers, renews its own, and reads the pins (see ``workers.py``).
No loop of the runner dies with the store: a worker thread or the heartbeat that cannot reach the database
waits with a growing backoff, says at WARNING what it waits for, and at INFO when the store is back; the
items it held when the store went away are handed back as soon as it is reachable again.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, or_, select
from sqlalchemy.exc import DBAPIError

from tranche.pipeline import store, workers
from tranche.pipeline.breaker import CLOSED, CircuitBreaker
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
from tranche.shared.ids import ID_MAX_LENGTH, check_id
from tranche.store.engine import reading

log = logging.getLogger(__name__)

# How long an idle worker thread waits before it looks for due items again (items may come from other
# processes, or come due by the clock); local enqueues wake it sooner.
IDLE_POLL_MIN = 0.02
IDLE_POLL_MAX = 0.25
# A loop that cannot reach the store waits this long before its first new try, doubling up to the maximum.
STORE_BACKOFF_MIN = 0.1
STORE_BACKOFF_MAX = 5.0
# While the store stays away, the WARNING that says so is repeated this often (not on every try).
STORE_NAG_SECONDS = 30.0
HEARTBEAT_SECONDS = 2.0
# A worker whose heartbeat is older than this is gone: its leases are handed back.
WORKER_TIMEOUT_SECONDS = 15.0


class _LeaseLost(Exception):
    """The fenced transition found the item no longer leased under our token: roll everything back."""


@dataclass
class _StageRuntime:
    pipeline: Pipeline
    stage: Stage
    breaker: CircuitBreaker | None
    wake: threading.Event


@dataclass(frozen=True)
class RunnerStatus:
    """What a health or readiness check needs to know about a runner."""

    name: str
    owner: str
    running: bool
    store_available: bool
    store_down_seconds: float | None
    store_error: str | None
    breakers: dict[str, str]
    excluded: frozenset[str]


@dataclass(frozen=True)
class Outcome:
    """What happened to one processed item (for counting and tests)."""

    item_id: str
    stage: str
    result: str  # succeeded, retry_scheduled, parked, failed, released, lease_lost


class PipelineRunner:
    """Runs the stages of ``pipelines`` against the store.

    ``name`` is the worker name pins refer to (default: the host name); ``owner`` names this run of the
    process in leases and in ``pipeline_workers`` (default name-pid-random). ``overrides`` replace declared
    stage settings, keyed by stage name or its environment spelling (see :func:`overrides_from_env`).
    Any runner serves any partition, except partitions an operator pinned to another worker name that is
    alive (see :mod:`tranche.pipeline.workers`). ``heartbeat_seconds`` and ``worker_timeout`` set how often
    a started runner beats and after how long without a beat another one counts it gone.
    """

    def __init__(
        self,
        engine: Engine,
        pipelines: Sequence[Pipeline],
        *,
        clock: Clock,
        name: str | None = None,
        owner: str | None = None,
        overrides: Mapping[str, StageOverride] | None = None,
        rng: random.Random | None = None,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        worker_timeout: float = WORKER_TIMEOUT_SECONDS,
    ) -> None:
        self.engine = engine
        self.clock = clock
        if name is None:
            self.name = workers.this_node().host[:ID_MAX_LENGTH] or "worker"
        else:
            self.name = check_id(name, field="TRANCHE_WORKER_NAME", kind="worker name")
        self.owner = owner or f"{self.name}-{os.getpid()}-{os.urandom(3).hex()}"
        if heartbeat_seconds <= 0 or worker_timeout <= heartbeat_seconds:
            raise PipelineDeclarationError(
                "heartbeat_seconds must be positive and worker_timeout longer than it", record=self.name
            )
        self.heartbeat_seconds = heartbeat_seconds
        self.worker_timeout = timedelta(seconds=worker_timeout)
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
        # Items processed by this runner, by (stage, outcome): the counters an exporter publishes.
        self.outcomes: Counter[tuple[str, str]] = Counter()
        # Partitions pinned to another worker that is alive: this runner leaves them alone.
        self._excluded: frozenset[str] = frozenset()
        self._orphaned_pins: set[tuple[str, str]] = set()
        self._routing_lock = threading.Lock()
        # Leases whose item could not be moved on because the store went away: handed back once it is back.
        self._stranded: list[store.Lease] = []
        self._orphan_suspects: set[tuple[str, str]] = set()
        self._store_lock = threading.Lock()
        self._store_down_since: float | None = None
        self._store_error: str | None = None
        self._store_nagged_at = 0.0
        self._registered = False
        self._process_start = workers.process_start(os.getpid()) or "?"

    # -- introspection ---------------------------------------------------------------------------------

    def stage(self, name: str) -> Stage:
        """The stage as this runner runs it (declaration plus overrides)."""
        return self._by_stage[name].stage

    def breaker_states(self) -> dict[str, str]:
        """Breaker state per stage name, for stages that declare a dependency."""
        return {rt.stage.name: rt.breaker.state for rt in self._runtimes if rt.breaker is not None}

    @property
    def excluded(self) -> frozenset[str]:
        """Partitions this runner leaves to the worker they are pinned to (as of its last heartbeat)."""
        return self._excluded

    def status(self) -> RunnerStatus:
        """Whether this runner runs, reaches its store, and what its breakers say (for health checks)."""
        with self._store_lock:
            since = self._store_down_since
            error = self._store_error
        return RunnerStatus(
            name=self.name,
            owner=self.owner,
            running=bool(self._threads),
            store_available=since is None,
            store_down_seconds=None if since is None else time.monotonic() - since,
            store_error=error,
            breakers=self.breaker_states(),
            excluded=self._excluded,
        )

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
        self.refresh(register=False)
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
        try:
            # Before any claim: a restart takes back its dead predecessor's leases at once.
            self.refresh()
        except Exception as exc:
            self._store_failed(exc, "registering this worker")
        log.info(
            "pipeline worker %s (%s) running %s",
            self.name,
            self.owner,
            ", ".join(f"{rt.stage.name}×{rt.stage.concurrency}" for rt in self._runtimes),
        )
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
            return
        if self._registered:
            try:
                with self.engine.begin() as conn:
                    # No thread works on anything now: whatever the store still says this runner holds (an
                    # item stranded by an outage, say) goes back before the registration it could be found by.
                    stages = [(rt.pipeline.name, rt.stage.name) for rt in self._runtimes]
                    store.hand_back(
                        conn,
                        store.leased_by(conn, self.owner, stages),
                        reason="its worker stopped",
                        now=self.clock.now(),
                    )
                    workers.deregister(conn, self.owner)
                self._registered = False
                with self._held_lock:
                    self._stranded.clear()
            except Exception as exc:
                # Others will find the heartbeat stopped and take over whatever is left.
                log.warning("pipeline worker %s could not deregister: %s", self.owner, _summary(exc))

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
        if self._excluded:
            query = query.where(t.c.partition.not_in(sorted(self._excluded)))
        with reading(self.engine) as conn:
            return conn.execute(query.limit(1)).first() is not None

    def refresh(self, *, register: bool = True) -> None:
        """One heartbeat, on the caller's thread: register or beat (when ``register``), hand back the leases
        of gone workers, read the pins, hand back stranded leases and renew held ones. Raises what the store
        raises."""
        now = self.clock.now()
        node = workers.this_node()
        with self.engine.begin() as conn:
            if register:
                workers.register(
                    conn,
                    worker_id=self.owner,
                    name=self.name,
                    node=node,
                    pid=os.getpid(),
                    started=self._process_start,
                    now=now,
                )
            reaped = workers.reap(conn, me=self.owner, node=node, now=now, timeout=self.worker_timeout)
            pinned = workers.pins(conn)
            live = workers.live_names(conn, now=now, timeout=self.worker_timeout)
        self._registered = self._registered or register
        self._store_back()
        for gone in reaped:
            log.info(
                "pipeline worker %s (%s) is gone (%s): %d of its leases handed back",
                gone.name,
                gone.id,
                gone.why,
                gone.leases,
            )
        if any(gone.leases for gone in reaped):
            self.notify()
        self._route(pinned, live | {self.name})
        self._release_stranded()
        if register:
            self._adopt_orphans()
        self._renew()

    def _adopt_orphans(self) -> None:
        """Hand back leases the store says this runner holds but no thread of it works on, once seen on two
        beats in a row. They come from a transition whose commit the server acknowledged and then lost
        (a crash with ``synchronous_commit=off``) or a claim whose answer never came; without this they would
        wait out their lease."""
        stages = [(rt.pipeline.name, rt.stage.name) for rt in self._runtimes]
        with reading(self.engine) as conn:
            rows = store.leased_by(conn, self.owner, stages)
        with self._held_lock:
            known = set(self._held) | {(lease.item.id, lease.token) for lease in self._stranded}
        orphans = {(r.id, r.token): r for r in rows if (r.id, r.token) not in known}
        due = [row for key, row in orphans.items() if key in self._orphan_suspects]
        self._orphan_suspects = set(orphans) - {(r.id, r.token) for r in due}
        if not due:
            return
        with self.engine.begin() as conn:
            released = store.hand_back(
                conn, due, reason="held by no worker thread of its owner", now=self.clock.now()
            )
        if released:
            log.warning(
                "pipeline worker %s handed back %d leases it held without working on them (a commit the store "
                "lost, or a claim whose answer never came)",
                self.name,
                released,
            )
            self.notify()

    def _route(self, pinned: Mapping[str, str], live: frozenset[str]) -> None:
        excluded = workers.excluded_partitions(pinned, live, self.name)
        orphaned = {(p, w) for p, w in pinned.items() if w not in live}
        with self._routing_lock:
            before, self._excluded = self._excluded, excluded
            newly = orphaned - self._orphaned_pins
            healed = {(p, w) for p, w in self._orphaned_pins - orphaned if pinned.get(p) == w}
            self._orphaned_pins = orphaned
        for worker, partitions in _by_worker(newly).items():
            log.warning(
                "%s pinned to worker %s, which is not running: worker %s serves %s (as every worker does) "
                "until %s is back",
                _partitions(partitions),
                worker,
                self.name,
                "it" if len(partitions) == 1 else "them",
                worker,
            )
        for worker, partitions in _by_worker(healed).items():
            log.info("%s: worker %s is back, the pin holds again", _partitions(partitions), worker)
        if excluded != before:
            log.info(
                "pipeline worker %s leaves %s to the workers they are pinned to",
                self.name,
                ", ".join(sorted(excluded)) or "no partition",
            )
            if len(excluded) < len(before) or not excluded <= before:
                self.notify()

    def _renew(self) -> None:
        with self._held_lock:
            held = list(self._held.values())
        if not held:
            return
        now = self.clock.now()
        with self.engine.begin() as conn:
            for seconds in sorted({s for _, s in held}):
                store.renew(
                    conn, [lease for lease, s in held if s == seconds], now + timedelta(seconds=seconds)
                )

    def _release_stranded(self) -> None:
        """Hand back the items whose transition the store refused while it was away, attempts given back."""
        with self._held_lock:
            stranded, self._stranded = self._stranded, []
        if not stranded:
            return
        try:
            with self.engine.begin() as conn:
                released = sum(
                    store.release(conn, lease, reason="the store was unreachable", now=self.clock.now())
                    for lease in stranded
                )
        except BaseException:
            with self._held_lock:
                self._stranded.extend(stranded)
            raise
        log.info("pipeline worker %s handed back %d items held while the store was away", self.name, released)
        self.notify()

    def _heartbeat(self) -> None:
        """Beat, hand back gone workers' leases, read the pins and renew held leases, every
        ``heartbeat_seconds`` (or every third of the shortest lease, if shorter); a killed process stops
        beating and its items are taken over by the first runner that notices."""
        shortest = min(rt.stage.lease_seconds for rt in self._runtimes)
        period = max(min(self.heartbeat_seconds, shortest / 3), 0.05)
        backoff = STORE_BACKOFF_MIN
        wait = period
        while not self._stopping.wait(wait):
            try:
                self.refresh()
            except Exception as exc:
                self._store_failed(exc, "the heartbeat")
                wait = _jittered(backoff)
                backoff = min(backoff * 2, STORE_BACKOFF_MAX)
                continue
            backoff = STORE_BACKOFF_MIN
            wait = period

    def _store_failed(self, exc: BaseException, what: str) -> None:
        """Say once (and then every :data:`STORE_NAG_SECONDS`) that the store is away; a bug is logged with
        its traceback each time."""
        summary = _summary(exc)
        if not _is_store_error(exc):
            log.error("pipeline %s failed; retrying", what, exc_info=exc)
        now = time.monotonic()
        with self._store_lock:
            first = self._store_down_since is None
            if first:
                self._store_down_since = now
            self._store_error = summary
            down_for = now - (self._store_down_since or now)
            nag = first or now - self._store_nagged_at >= STORE_NAG_SECONDS
            if nag:
                self._store_nagged_at = now
        if nag and _is_store_error(exc):
            if first:
                log.warning(
                    "pipeline worker %s cannot reach the store (%s: %s); waiting for it, retrying with backoff "
                    "up to %.0fs",
                    self.name,
                    what,
                    summary,
                    STORE_BACKOFF_MAX,
                )
            else:
                log.warning(
                    "pipeline worker %s still waiting for the store after %.0fs (%s)",
                    self.name,
                    down_for,
                    summary,
                )

    def _store_back(self) -> None:
        with self._store_lock:
            since, self._store_down_since, self._store_error = self._store_down_since, None, None
        if since is not None:
            log.info(
                "pipeline worker %s reaches the store again after %.1fs", self.name, time.monotonic() - since
            )

    def _worker(self, rt: _StageRuntime) -> None:
        idle = IDLE_POLL_MIN
        backoff = STORE_BACKOFF_MIN
        while not self._stopping.is_set():
            # Cleared before looking, so that a wake-up sent while we look is not lost.
            rt.wake.clear()
            try:
                if self._stranded:
                    self._release_stranded()
                done = self._claim_and_process(rt)
            except Exception as exc:
                # The store failed (connection lost, database locked, ...): keep the worker alive, wait.
                self._store_failed(exc, f"the {rt.stage.name} worker")
                self._stopping.wait(_jittered(backoff))
                backoff = min(backoff * 2, STORE_BACKOFF_MAX)
                continue
            if backoff != STORE_BACKOFF_MIN:
                backoff = STORE_BACKOFF_MIN
                self._store_back()
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
            probing = rt.breaker.state != CLOSED
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
                            excluded=self._excluded,
                        )
                except BaseException:
                    # The commit of the claim failed, perhaps after the server had made it (a dropped
                    # connection does not say): hand the leases back once the store is back, if they exist.
                    with self._held_lock:
                        self._stranded.extend(leases)
                    leases = []
                    raise
                finally:
                    if probing and not leases and rt.breaker is not None:
                        rt.breaker.cancel_probe()  # nothing to probe with
                with self._held_lock:
                    for lease in leases:
                        self._held[(lease.item.id, lease.token)] = (lease, rt.stage.lease_seconds)
                done = 0
                try:
                    for lease in leases:
                        if rt.breaker is not None and not rt.breaker.allows_more():
                            self._finish(
                                rt, conn, lease, "released", self._release, "circuit open: handed back"
                            )
                        else:
                            self._process(rt, conn, lease)
                        done += 1
                        with self._held_lock:
                            self._held.pop((lease.item.id, lease.token), None)
                except BaseException:
                    # The store went away mid-batch: what was not moved on is handed back once it is back.
                    with self._held_lock:
                        self._stranded.extend(leases[done:])
                    raise
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
            refund = False
            if rt.breaker is not None:
                if exc.dependency_down:
                    # A probe, or a failure that follows another one: the dependency is down, not the item.
                    refund = not rt.breaker.failure(self.clock.now())
                else:
                    rt.breaker.cancel_probe()
            return self._retry(rt, conn, lease, exc.message, exc.retry_after, refund=refund)
        except Exception as exc:
            # A bug must not lose work: retry like a transient failure, keep where it happened.
            if rt.breaker is not None:
                rt.breaker.cancel_probe()
            summary = "".join(traceback.format_exception(exc, limit=-3)).strip()
            log.warning("stage %s item %s raised %s", stage.name, item.id, type(exc).__name__)
            return self._retry(rt, conn, lease, f"{type(exc).__name__}: {exc}\n{summary}", None)
        if rt.breaker is not None:
            rt.breaker.success()
        self._count(stage.name, "succeeded")
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
        self,
        rt: _StageRuntime,
        conn: Connection,
        lease: store.Lease,
        error: str,
        retry_after: float | None,
        *,
        refund: bool = False,
    ) -> Outcome:
        policy = rt.stage.retry
        if not refund and lease.item.attempt >= policy.max_attempts:
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
            return store.schedule_retry(tx, lease, error=error, run_at=run_at, now=now, refund=refund)

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
        self._count(rt.stage.name, result)
        return Outcome(lease.item.id, rt.stage.name, result)

    def _count(self, stage: str, result: str) -> None:
        with self._in_flight_lock:
            if result != "released":
                self.processed += 1
            self.outcomes[(stage, result)] += 1

    def _lost(self, lease: store.Lease) -> Outcome:
        with self._in_flight_lock:
            self.lost_leases += 1
            self.outcomes[(lease.item.stage, "lease_lost")] += 1
        log.warning(
            "item %s at %s: lease taken over by another worker; our transition was rolled back",
            lease.item.id,
            lease.item.stage,
        )
        return Outcome(lease.item.id, lease.item.stage, "lease_lost")


def _by_worker(pins: set[tuple[str, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for partition, worker in sorted(pins):
        found.setdefault(worker, []).append(partition)
    return found


def _partitions(names: Sequence[str], shown: int = 10) -> str:
    """``partition a is`` or ``partitions a, b, c and 7 more are``, for a log line."""
    if len(names) == 1:
        return f"partition {names[0]} is"
    listed = ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
    return f"partitions {listed} are"


def _is_store_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the store is away or busy (rather than a bug): a driver error, or SQLite's writer
    lock not handed over in time."""
    return isinstance(exc, DBAPIError | TimeoutError | ConnectionError)


def _summary(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _jittered(seconds: float) -> float:
    return seconds * random.uniform(0.8, 1.2)
