"""What the pipeline hands a Prometheus exporter: plain metric families with the figures of the store and of
this process's runner."""

from __future__ import annotations

from datetime import timedelta

from pipeline_toys import Flaky, create_effects, later, put, recorder
from sqlalchemy import Engine

from tranche.pipeline import (
    BreakerPolicy,
    Metric,
    Pipeline,
    PipelineRunner,
    RetryableError,
    RetryPolicy,
    Stage,
    pin,
    pipeline_metrics,
)
from tranche.shared.clock import ManualClock


def samples(metrics: list[Metric], name: str) -> dict[tuple[str, ...], float]:
    (family,) = [m for m in metrics if m.name == name]
    return dict(family.samples)


def test_the_metrics_show_depths_lag_rates_breakers_and_outcomes(engine: Engine) -> None:
    create_effects(engine)
    clock = ManualClock()
    service = Flaky()
    service.down, service.down_error = True, RetryableError("503")
    stages = [
        Stage("toy.diff", recorder("toy.assess")),
        Stage(
            "toy.assess",
            recorder(None),
            work=service,
            dependency="cashflow-service",
            retry=RetryPolicy(max_attempts=5, jitter=0.0),
            breaker=BreakerPolicy(failure_threshold=2),
        ),
    ]
    runner = PipelineRunner(engine, [Pipeline("toy", stages)], clock=clock, name="w1")
    put(engine, "toy.diff", count=4, clock=clock)
    runner.run_until_idle()
    runner.refresh()
    later(clock, 1)
    put(engine, "toy.diff", count=2, clock=clock)  # waiting since now
    later(clock, 5)
    with engine.begin() as conn:
        pin(conn, "acme", "elsewhere", now=clock.now())

    with engine.connect() as conn:
        metrics = pipeline_metrics(conn, now=clock.now(), runner=runner)

    assert {m.name for m in metrics} >= {
        "tranche_pipeline_items",
        "tranche_pipeline_oldest_ready_seconds",
        "tranche_pipeline_completed_per_second",
        "tranche_pipeline_workers",
        "tranche_pipeline_pins",
        "tranche_pipeline_breaker_state",
        "tranche_pipeline_breaker_opened_total",
        "tranche_pipeline_processed_total",
        "tranche_pipeline_store_up",
    }
    assert all(m.kind in ("gauge", "counter") for m in metrics)
    assert all(m.name.endswith("_total") == (m.kind == "counter") for m in metrics)
    assert all(len(values) == len(m.labels) for m in metrics for values, _ in m.samples)
    items = samples(metrics, "tranche_pipeline_items")
    assert items[("toy", "toy.diff", "ready")] == 2
    assert items[("toy", "toy.diff", "done")] == 0  # the four passed on to toy.assess
    assert items[("toy", "toy.assess", "retry_wait")] == 2  # two failures opened the breaker
    assert items[("toy", "toy.assess", "ready")] == 2  # handed back untouched when it opened
    assert items[("toy", "toy.assess", "parked")] == 0
    lag = samples(metrics, "tranche_pipeline_oldest_ready_seconds")
    assert lag[("toy", "toy.diff")] == 5
    assert lag[("toy", "toy.assess")] == 6
    assert samples(metrics, "tranche_pipeline_completed_per_second")[("toy", "toy.diff")] == 4 / 60
    assert samples(metrics, "tranche_pipeline_workers") == {("true",): 1, ("false",): 0}
    assert samples(metrics, "tranche_pipeline_pins") == {("true",): 0, ("false",): 1}
    breaker = samples(metrics, "tranche_pipeline_breaker_state")
    assert breaker[("cashflow-service", "open")] == 1
    assert breaker[("cashflow-service", "closed")] == 0
    assert samples(metrics, "tranche_pipeline_breaker_opened_total") == {("cashflow-service",): 1}
    processed = samples(metrics, "tranche_pipeline_processed_total")
    assert processed[("toy.diff", "succeeded")] == 4
    assert processed[("toy.assess", "retry_scheduled")] == 2
    assert processed[("toy.assess", "released")] == 2
    assert samples(metrics, "tranche_pipeline_store_up") == {(): 1}


def test_without_a_runner_the_metrics_are_the_stores_alone(engine: Engine) -> None:
    clock = ManualClock()
    put(engine, "toy.b", count=3, clock=clock)
    clock.advance(timedelta(seconds=2))
    with engine.connect() as conn:
        metrics = pipeline_metrics(conn, now=clock.now())
    assert samples(metrics, "tranche_pipeline_items")[("toy", "toy.b", "ready")] == 3
    assert "tranche_pipeline_breaker_state" not in {m.name for m in metrics}
