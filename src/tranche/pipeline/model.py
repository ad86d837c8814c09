"""How a pipeline is declared: stages, their retry policy, and what a stage returns.

Pure: no I/O and no clock. The runner (``runner.py``) and the store functions (``store.py``) act on it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from tranche.pipeline.errors import InvalidStageOverrideError, PipelineDeclarationError

# Statuses an item can have. ``ready``/``retry_wait``/``leased`` are live; ``parked`` waits for an operator;
# ``done`` and ``failed`` are final.
READY = "ready"
LEASED = "leased"
RETRY_WAIT = "retry_wait"
DONE = "done"
FAILED = "failed"
PARKED = "parked"
STATUSES = (READY, LEASED, RETRY_WAIT, DONE, FAILED, PARKED)
# Not finished: an item in one of these still holds back later items of its partition at ordered stages.
UNFINISHED = (READY, LEASED, RETRY_WAIT, PARKED)

# Trace events, one per transition.
ENQUEUED = "enqueued"
CLAIMED = "claimed"
SUCCEEDED = "succeeded"
RETRY_SCHEDULED = "retry_scheduled"
FAILED_EVENT = "failed"
PARKED_EVENT = "parked"
REQUEUED = "requeued"
LEASE_EXPIRED = "lease_expired"
# A claimed item handed back untouched because its dependency's breaker opened: no attempt is spent.
RELEASED = "released"
EVENTS = (
    ENQUEUED,
    CLAIMED,
    SUCCEEDED,
    RETRY_SCHEDULED,
    FAILED_EVENT,
    PARKED_EVENT,
    REQUEUED,
    LEASE_EXPIRED,
    RELEASED,
)


class RetryableError(Exception):
    """A failure that may pass later (HTTP 429/5xx, a timeout, a refused connection).

    The item is scheduled again at the stage that failed, after a backoff (at least ``retry_after`` seconds
    when given, e.g. from ``Retry-After``). ``dependency_down`` counts the failure towards the stage's
    circuit breaker; pass False for a failure that says nothing about the dependency's health.
    """

    def __init__(self, message: str, retry_after: float | None = None, dependency_down: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.dependency_down = dependency_down


class TerminalError(Exception):
    """A failure that retrying cannot cure (HTTP 4xx, invalid data): the item stops as ``failed`` with this
    message as its reason."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_RANDOM = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; after ``max_attempts`` attempts at one stage the item is parked."""

    max_attempts: int = 10
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.2

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        The backoff is ``initial_delay * multiplier**(attempt-1)`` capped at ``max_delay``, spread by
        ``± jitter``. A ``retry_after`` from the dependency is a floor: the item never comes back sooner.
        """
        draw = (rng or _RANDOM).random
        try:
            base = min(self.initial_delay * self.multiplier ** max(attempt - 1, 0), self.max_delay)
        except OverflowError:
            base = self.max_delay
        spread = base * self.jitter * (2 * draw() - 1)
        delay = max(base + spread, 0.0)
        if retry_after is not None and retry_after > delay:
            # Never earlier than asked; a little upward jitter so that a crowd told "retry in 1 s" does not
            # come back in the same millisecond.
            delay = retry_after * (1 + self.jitter * draw())
        return delay


@dataclass(frozen=True)
class BreakerPolicy:
    """When a dependency's circuit breaker opens and how long it stays open before one probe."""

    failure_threshold: int = 5
    cooldown: float = 5.0
    max_cooldown: float = 60.0


@dataclass(frozen=True)
class Item:
    """One unit of work as a stage sees it. ``attempt`` counts claims at the current stage, from 1."""

    id: str
    pipeline: str
    stage: str
    partition: str
    sequence: int
    payload: dict[str, Any]
    attempt: int
    trace_key: str | None
    parent_id: str | None


@dataclass(frozen=True)
class NewItem:
    """An item to enqueue: at ``stage`` of a pipeline, ordered by ``sequence`` within ``partition``."""

    stage: str
    payload: dict[str, Any]
    partition: str
    sequence: int
    trace_key: str | None = None
    parent_id: str | None = None


@dataclass(frozen=True)
class Next:
    """What a stage's ``commit`` returns: where the item goes next.

    ``stage`` None finishes the item (``done``). ``payload`` replaces the item's payload when given.
    ``children`` are enqueued in the same transaction (fan-out); a child without ``parent_id`` gets the
    item's id.
    """

    stage: str | None
    payload: dict[str, Any] | None = None
    children: tuple[NewItem, ...] = ()


Commit = Callable[[Connection, Item, Any], Next]
Work = Callable[[Item], Any]


@dataclass(frozen=True)
class Stage:
    """A named step of a pipeline, with its limits and retry policy declared where it is declared.

    ``work`` runs before and outside any database transaction (calls to external services) and may raise
    :class:`RetryableError` or :class:`TerminalError`; its result is handed to ``commit``, which runs in the
    transaction that moves the item on. ``ordered`` keeps sequence order per partition: an item waits while
    an item of its partition with a smaller sequence is unfinished at this stage or an earlier one.
    """

    name: str
    commit: Commit
    work: Work | None = None
    concurrency: int = 1
    lease_seconds: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    dependency: str | None = None
    ordered: bool = False
    claim_batch: int = 8
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)


class Pipeline:
    """A named sequence of stages; the order of ``stages`` is their rank for ordered stages."""

    def __init__(self, name: str, stages: Sequence[Stage]) -> None:
        if not stages:
            raise PipelineDeclarationError(f"pipeline {name!r} has no stages", record=name)
        names = [stage.name for stage in stages]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise PipelineDeclarationError(
                f"pipeline {name!r} declares stage(s) {', '.join(duplicates)} twice", record=name
            )
        for stage in stages:
            _check_stage(stage)
        self.name = name
        self.stages: tuple[Stage, ...] = tuple(stages)
        self._rank = {stage.name: rank for rank, stage in enumerate(stages)}

    def stage(self, name: str) -> Stage:
        try:
            return self.stages[self._rank[name]]
        except KeyError:
            raise PipelineDeclarationError(
                f"pipeline {self.name!r} has no stage {name!r}", record=self.name, field="stage"
            ) from None

    def rank(self, name: str) -> int:
        return self._rank[name]

    def has_stage(self, name: str) -> bool:
        return name in self._rank

    def up_to(self, name: str) -> tuple[str, ...]:
        """The names of this stage and every stage before it."""
        return tuple(s.name for s in self.stages[: self._rank[name] + 1])

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, [{', '.join(s.name for s in self.stages)}])"


def _check_stage(stage: Stage) -> None:
    problems = []
    if stage.concurrency < 1:
        problems.append("concurrency must be at least 1")
    if stage.claim_batch < 1:
        problems.append("claim_batch must be at least 1")
    if stage.lease_seconds <= 0:
        problems.append("lease_seconds must be positive")
    if stage.retry.max_attempts < 1:
        problems.append("retry.max_attempts must be at least 1")
    if stage.breaker.failure_threshold < 1:
        problems.append("breaker.failure_threshold must be at least 1")
    if problems:
        raise PipelineDeclarationError(f"stage {stage.name!r}: {'; '.join(problems)}", record=stage.name)


@dataclass(frozen=True)
class StageOverride:
    """Configuration that replaces what a stage declares (None keeps the declared value)."""

    concurrency: int | None = None
    max_attempts: int | None = None
    lease_seconds: float | None = None
    claim_batch: int | None = None


def override_key(stage_name: str) -> str:
    """The environment spelling of a stage name: ``intake.assess`` → ``INTAKE_ASSESS``."""
    return re.sub(r"[^A-Z0-9]+", "_", stage_name.upper()).strip("_")


_OVERRIDE_FIELDS: tuple[tuple[str, str, type], ...] = (
    ("_MAX_ATTEMPTS", "max_attempts", int),
    ("_LEASE_SECONDS", "lease_seconds", float),
    ("_CONCURRENCY", "concurrency", int),
    ("_CLAIM_BATCH", "claim_batch", int),
)
ENV_PREFIX = "TRANCHE_STAGE_"


def overrides_from_env(env: Mapping[str, str]) -> dict[str, StageOverride]:
    """Stage overrides from variables like ``TRANCHE_STAGE_INTAKE_ASSESS_CONCURRENCY=4``.

    Keys of the result are :func:`override_key` spellings; :class:`PipelineRunner` matches them to stage
    names spelt either way. Recognised suffixes: ``_CONCURRENCY``, ``_MAX_ATTEMPTS``, ``_LEASE_SECONDS``,
    ``_CLAIM_BATCH``. A value that is not a positive number raises :class:`InvalidStageOverrideError`.
    """
    found: dict[str, dict[str, Any]] = {}
    for variable, raw in env.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        rest = variable[len(ENV_PREFIX) :]
        for suffix, attribute, kind in _OVERRIDE_FIELDS:
            if rest.endswith(suffix) and len(rest) > len(suffix):
                try:
                    value = kind(raw.strip())
                except ValueError:
                    value = None
                if value is None or value <= 0:
                    raise InvalidStageOverrideError(
                        f"{variable}={raw!r} is not a positive {kind.__name__}", field=variable
                    )
                found.setdefault(rest[: -len(suffix)], {})[attribute] = value
                break
    return {key: StageOverride(**values) for key, values in found.items()}


def apply_override(stage: Stage, override: StageOverride | None) -> Stage:
    """The stage as configured: its declaration with the override's non-None values."""
    if override is None:
        return stage
    from dataclasses import replace

    retry = stage.retry
    if override.max_attempts is not None:
        retry = replace(retry, max_attempts=override.max_attempts)
    configured = replace(
        stage,
        retry=retry,
        concurrency=override.concurrency if override.concurrency is not None else stage.concurrency,
        lease_seconds=override.lease_seconds if override.lease_seconds is not None else stage.lease_seconds,
        claim_batch=override.claim_batch if override.claim_batch is not None else stage.claim_batch,
    )
    _check_stage(configured)
    return configured
