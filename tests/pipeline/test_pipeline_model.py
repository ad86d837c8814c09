"""The pure parts: backoff, overrides, declarations, and the circuit breaker's state machine."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tranche.pipeline import (
    BreakerPolicy,
    CircuitBreaker,
    InvalidStageOverrideError,
    Next,
    Pipeline,
    PipelineDeclarationError,
    RetryPolicy,
    Stage,
    StageOverride,
    override_key,
    overrides_from_env,
)
from tranche.pipeline.model import apply_override

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def nothing(conn: Any, item: Any, result: Any) -> Next:
    return Next(None)


@given(
    attempt=st.integers(min_value=1, max_value=400),
    initial=st.floats(min_value=0.01, max_value=10),
    multiplier=st.floats(min_value=1.0, max_value=4.0),
    cap=st.floats(min_value=1, max_value=600),
    jitter=st.floats(min_value=0, max_value=0.9),
    seed=st.integers(),
)
def test_a_backoff_stays_within_its_jitter_of_the_capped_exponential(
    attempt: int, initial: float, multiplier: float, cap: float, jitter: float, seed: int
) -> None:
    policy = RetryPolicy(initial_delay=initial, multiplier=multiplier, max_delay=cap, jitter=jitter)
    try:
        base = min(initial * multiplier ** (attempt - 1), cap)
    except OverflowError:
        base = cap
    delay = policy.delay(attempt, rng=random.Random(seed))
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9


@given(retry_after=st.floats(min_value=0, max_value=3600), attempt=st.integers(min_value=1, max_value=20))
def test_a_retry_never_comes_back_before_retry_after(retry_after: float, attempt: int) -> None:
    assert RetryPolicy().delay(attempt, retry_after) >= retry_after


def test_without_jitter_the_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_delay=0.5, multiplier=2.0, max_delay=3.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_overrides_are_read_from_the_environment() -> None:
    env = {
        "TRANCHE_STAGE_INTAKE_ASSESS_CONCURRENCY": "4",
        "TRANCHE_STAGE_INTAKE_ASSESS_MAX_ATTEMPTS": "20",
        "TRANCHE_STAGE_INTAKE_DIFF_LEASE_SECONDS": "120.5",
        "TRANCHE_STAGE_INTAKE_DIFF_CLAIM_BATCH": "16",
        "TRANCHE_DATABASE_URL": "sqlite:///x",
    }
    assert overrides_from_env(env) == {
        "INTAKE_ASSESS": StageOverride(concurrency=4, max_attempts=20),
        "INTAKE_DIFF": StageOverride(lease_seconds=120.5, claim_batch=16),
    }
    assert override_key("intake.assess") == "INTAKE_ASSESS"


@pytest.mark.parametrize("raw", ["0", "-1", "four", ""])
def test_an_override_that_is_not_a_positive_number_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(InvalidStageOverrideError) as raised:
        overrides_from_env({"TRANCHE_STAGE_INTAKE_ASSESS_CONCURRENCY": raw})
    assert raised.value.field == "TRANCHE_STAGE_INTAKE_ASSESS_CONCURRENCY"


def test_an_override_keeps_what_it_does_not_mention() -> None:
    stage = Stage(
        "intake.assess",
        nothing,
        concurrency=2,
        lease_seconds=30,
        retry=RetryPolicy(max_attempts=5, initial_delay=2),
    )
    configured = apply_override(stage, StageOverride(max_attempts=9))
    assert (configured.concurrency, configured.lease_seconds) == (2, 30)
    assert configured.retry == RetryPolicy(max_attempts=9, initial_delay=2)


def test_a_pipeline_refuses_duplicate_stages_and_impossible_limits() -> None:
    with pytest.raises(PipelineDeclarationError):
        Pipeline("p", [Stage("p.a", nothing), Stage("p.a", nothing)])
    with pytest.raises(PipelineDeclarationError):
        Pipeline("p", [Stage("p.a", nothing, concurrency=0)])
    with pytest.raises(PipelineDeclarationError):
        Pipeline("p", [])
    pipeline = Pipeline("p", [Stage("p.a", nothing), Stage("p.b", nothing), Stage("p.c", nothing)])
    assert pipeline.up_to("p.b") == ("p.a", "p.b")


def test_the_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker("svc", BreakerPolicy(failure_threshold=3, cooldown=10))
    breaker.failure(T0)
    breaker.failure(T0)
    breaker.success()
    breaker.failure(T0)
    breaker.failure(T0)
    assert breaker.state == "closed"
    assert breaker.permit(T0, 8) == 8
    breaker.failure(T0)
    assert breaker.state == "open"
    assert breaker.permit(T0 + timedelta(seconds=9.9), 8) == 0


def test_after_the_cooldown_the_breaker_lets_exactly_one_probe_through() -> None:
    breaker = CircuitBreaker("svc", BreakerPolicy(failure_threshold=1, cooldown=10, max_cooldown=25))
    breaker.failure(T0)
    later = T0 + timedelta(seconds=10)
    assert breaker.permit(later, 8) == 1
    assert breaker.state == "half_open"
    assert breaker.permit(later, 8) == 0  # the probe is out
    breaker.failure(later)  # the probe failed: open again, cool-down doubled
    assert breaker.state == "open"
    assert breaker.permit(later + timedelta(seconds=19), 8) == 0
    assert breaker.permit(later + timedelta(seconds=20), 8) == 1
    breaker.cancel_probe()  # nothing was due: the next caller may probe
    assert breaker.permit(later + timedelta(seconds=20), 8) == 1
    breaker.success()
    assert breaker.state == "closed"
    assert breaker.permit(later + timedelta(seconds=20), 8) == 8


def test_the_breaker_cooldown_grows_no_further_than_its_maximum() -> None:
    breaker = CircuitBreaker("svc", BreakerPolicy(failure_threshold=1, cooldown=10, max_cooldown=25))
    now = T0
    breaker.failure(now)
    for _ in range(5):
        retry_at = breaker.retry_at()
        assert retry_at is not None
        now = retry_at
        assert breaker.permit(now, 1) == 1
        breaker.failure(now)
    assert breaker.retry_at() == now + timedelta(seconds=25)
