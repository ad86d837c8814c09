"""What a Prometheus exporter needs from the pipeline, as plain data: no client library is imported here.

:func:`pipeline_metrics` returns metric families; an exporter turns each into its library's family, e.g. with
``prometheus_client`` in a custom collector::

    for m in pipeline_metrics(conn, now=clock.now(), pipelines=pipelines, runner=runner):
        family = (GaugeMetricFamily if m.kind == "gauge" else CounterMetricFamily)(m.name, m.help, labels=m.labels)
        for values, value in m.samples:
            family.add_metric(values, value)
        yield family

Counts by status, queue lag, recent rates, workers and pins come from the store, so every process reports the
same figures for them; breaker states, the store's reachability and the ``_total`` counters are this
process's own (each process has its own breakers and counts its own work), and an exporter that scrapes
several processes sums or compares them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select

from tranche.pipeline import workers
from tranche.pipeline.breaker import CLOSED, HALF_OPEN, OPEN
from tranche.pipeline.model import DONE, FAILED, LEASED, PARKED, READY, RETRY_WAIT, Pipeline
from tranche.pipeline.queries import stage_stats
from tranche.pipeline.runner import WORKER_TIMEOUT_SECONDS, PipelineRunner
from tranche.pipeline.tables import pipeline_items
from tranche.shared.clock import stored_utc

Sample = tuple[tuple[str, ...], float]


@dataclass(frozen=True)
class Metric:
    """One metric family: ``kind`` is ``gauge`` or ``counter`` (whose name ends in ``_total``); each sample
    gives the values of ``labels``, in order, and the value."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...]
    samples: tuple[Sample, ...]


def pipeline_metrics(
    conn: Connection,
    *,
    now: datetime,
    pipelines: Sequence[Pipeline] = (),
    runner: PipelineRunner | None = None,
) -> list[Metric]:
    """The pipeline's metric families at ``now``: stage depths by status, in flight, retrying, parked,
    failed (``tranche_pipeline_items``), the age of the oldest ready item per stage, completions per second
    over the last minute, live workers, pins, and, with a ``runner``, this process's breakers, store
    reachability and processed items by outcome."""
    pipelines = list(pipelines) or (list(runner.pipelines.values()) if runner is not None else [])
    stats = stage_stats(
        conn, now=now, pipelines=pipelines, breakers=runner.breaker_states() if runner is not None else None
    )
    items: list[Sample] = []
    rates: list[Sample] = []
    for s in stats:
        key = (s.pipeline, s.stage)
        for status, value in (
            (READY, s.ready),
            (LEASED, s.in_flight),
            (RETRY_WAIT, s.retry_wait),
            (PARKED, s.parked),
            (FAILED, s.failed),
            (DONE, s.done),
        ):
            items.append(((*key, status), float(value)))
        rates.append((key, s.rate_per_second))
    t = pipeline_items
    oldest = conn.execute(
        select(t.c.pipeline, t.c.stage, func.min(t.c.next_run_at))
        .where(t.c.status == READY)
        .group_by(t.c.pipeline, t.c.stage)
    ).all()
    ages: dict[tuple[str, str], float] = {
        (p, st): max((now - stored_utc(at)).total_seconds(), 0.0) for p, st, at in oldest if at is not None
    }
    lag = [(key, ages.get(key, 0.0)) for key in ((s.pipeline, s.stage) for s in stats)]
    timeout = runner.worker_timeout if runner is not None else timedelta(seconds=WORKER_TIMEOUT_SECONDS)
    registered = workers.list_workers(conn, now=now, timeout=timeout)
    pins = workers.list_pins(conn, now=now, timeout=timeout)
    result = [
        Metric(
            "tranche_pipeline_items",
            "gauge",
            "Pipeline items by stage and status (ready: the stage's depth; leased: in flight; retry_wait: "
            "waiting to retry; parked; failed; done)",
            ("pipeline", "stage", "status"),
            tuple(items),
        ),
        Metric(
            "tranche_pipeline_oldest_ready_seconds",
            "gauge",
            "Age of the oldest item waiting to be claimed at each stage (0 when none waits)",
            ("pipeline", "stage"),
            tuple(lag),
        ),
        Metric(
            "tranche_pipeline_completed_per_second",
            "gauge",
            "Items that passed each stage per second over the last minute, by every worker",
            ("pipeline", "stage"),
            tuple(rates),
        ),
        Metric(
            "tranche_pipeline_workers",
            "gauge",
            "Registered pipeline workers, alive or gone (not yet noticed)",
            ("alive",),
            (
                (("true",), float(sum(w.alive for w in registered))),
                (("false",), float(sum(not w.alive for w in registered))),
            ),
        ),
        Metric(
            "tranche_pipeline_pins",
            "gauge",
            "Partitions pinned to a worker; obeyed=false: the worker is not running and every worker serves it",
            ("obeyed",),
            (
                (("true",), float(sum(p.obeyed for p in pins))),
                (("false",), float(sum(not p.obeyed for p in pins))),
            ),
        ),
    ]
    if runner is not None:
        result += _runner_metrics(runner)
    return result


def _runner_metrics(runner: PipelineRunner) -> list[Metric]:
    status = runner.status()
    states: list[Sample] = []
    opened: list[Sample] = []
    for dependency, breaker in sorted(runner.breakers.items()):
        for state in (CLOSED, OPEN, HALF_OPEN):
            states.append(((dependency, state), 1.0 if breaker.state == state else 0.0))
        opened.append(((dependency,), float(breaker.opened_count)))
    with_outcomes = sorted(runner.outcomes.items())
    return [
        Metric(
            "tranche_pipeline_breaker_state",
            "gauge",
            "This process's circuit breaker per dependency: 1 for its current state",
            ("dependency", "state"),
            tuple(states),
        ),
        Metric(
            "tranche_pipeline_breaker_opened_total",
            "counter",
            "Times this process's breaker for a dependency opened",
            ("dependency",),
            tuple(opened),
        ),
        Metric(
            "tranche_pipeline_processed_total",
            "counter",
            "Items this process's workers processed, by stage and outcome (succeeded, retry_scheduled, "
            "parked, failed, released, lease_lost)",
            ("stage", "outcome"),
            tuple(((stage, outcome), float(n)) for (stage, outcome), n in with_outcomes),
        ),
        Metric(
            "tranche_pipeline_store_up",
            "gauge",
            "1 while this process's pipeline workers reach the store, 0 while they wait for it",
            (),
            (((), 1.0 if status.store_available else 0.0),),
        ),
    ]
