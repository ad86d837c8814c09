"""Durable staged pipelines over unreliable services.

Work items move through the named stages of a :class:`Pipeline`. Their state lives in the store
(``pipeline_items``), every transition is appended to ``pipeline_trace``, and a :class:`PipelineRunner` claims
due items with leases, calls the stage, and moves the item on in one fenced transaction::

    read = Stage("intake.read", commit=read_slice)
    assess = Stage("intake.assess", work=call_service, commit=store_assessment,
                   dependency="cashflow-service", concurrency=4, retry=RetryPolicy(max_attempts=8))
    intake = Pipeline("intake", [read, assess])

    with engine.begin() as conn:
        enqueue(conn, "intake", NewItem("intake.read", {"batch": b}, partition=lender, sequence=n))
    PipelineRunner(engine, [intake], clock=SystemClock()).run_until_idle()

A :class:`RetryableError` schedules the item again at the stage that failed (exponential backoff with jitter,
honouring ``retry_after``) and frees the worker; after ``max_attempts`` the item is parked. A
:class:`TerminalError` fails it with the reason. :func:`retry_item` (or :func:`retry_items`, a batch at a time)
puts a parked or failed item back. Any other exception is retried like a transient failure, with its traceback
summary kept. A circuit breaker per ``dependency`` stops claims while the dependency is down, then probes with
one item; a probe, or a failure that follows another, spends no attempt, so an outage parks nothing.

Routing: any started runner serves any partition, and ordered stages keep each partition's sequence order
whichever worker claims; an operator may :func:`pin` a partition to a worker name at run time (obeyed while a
worker of that name is alive). Started runners register with a heartbeat, so the leases of a killed worker are
handed back as soon as it is found gone (see :mod:`tranche.pipeline.workers`). :func:`pipeline_metrics` gives
what a Prometheus exporter publishes.
"""

from tranche.pipeline.breaker import CircuitBreaker
from tranche.pipeline.errors import (
    InvalidStageOverrideError,
    ItemNotFoundError,
    ItemNotParkedError,
    ItemNotRetryableError,
    PipelineDeclarationError,
    PipelineError,
)
from tranche.pipeline.metrics import Metric, pipeline_metrics
from tranche.pipeline.model import (
    BreakerPolicy,
    Item,
    NewItem,
    Next,
    Pipeline,
    RetryableError,
    RetryPolicy,
    Stage,
    StageOverride,
    TerminalError,
    override_key,
    overrides_from_env,
)
from tranche.pipeline.queries import (
    RETRYABLE,
    ItemView,
    StageStats,
    TraceEntry,
    get_item,
    item_trace,
    items_by_trace_key,
    retry_item,
    retry_items,
    retry_parked,
    stage_stats,
)
from tranche.pipeline.runner import PipelineRunner, RunnerStatus
from tranche.pipeline.store import enqueue
from tranche.pipeline.workers import Pin, WorkerView, list_pins, list_workers, pin, unpin

__all__ = [
    "RETRYABLE",
    "BreakerPolicy",
    "CircuitBreaker",
    "InvalidStageOverrideError",
    "Item",
    "ItemNotFoundError",
    "ItemNotParkedError",
    "ItemNotRetryableError",
    "ItemView",
    "Metric",
    "NewItem",
    "Next",
    "Pin",
    "Pipeline",
    "PipelineDeclarationError",
    "PipelineError",
    "PipelineRunner",
    "RetryPolicy",
    "RetryableError",
    "RunnerStatus",
    "Stage",
    "StageOverride",
    "StageStats",
    "TerminalError",
    "TraceEntry",
    "WorkerView",
    "enqueue",
    "get_item",
    "item_trace",
    "items_by_trace_key",
    "list_pins",
    "list_workers",
    "override_key",
    "overrides_from_env",
    "pin",
    "pipeline_metrics",
    "retry_item",
    "retry_items",
    "retry_parked",
    "stage_stats",
    "unpin",
]
