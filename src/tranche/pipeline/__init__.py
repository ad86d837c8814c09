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
honouring ``retry_after``) and frees the worker; after ``max_attempts`` the item is parked until
:func:`retry_parked`. A :class:`TerminalError` fails it with the reason. Any other exception is retried like a
transient failure, with its traceback summary kept. A circuit breaker per ``dependency`` stops claims while the
dependency is down, then probes with one item.
"""

from tranche.pipeline.breaker import CircuitBreaker
from tranche.pipeline.errors import (
    InvalidStageOverrideError,
    ItemNotFoundError,
    ItemNotParkedError,
    PipelineDeclarationError,
    PipelineError,
)
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
    ItemView,
    StageStats,
    TraceEntry,
    get_item,
    item_trace,
    items_by_trace_key,
    retry_parked,
    stage_stats,
)
from tranche.pipeline.runner import PipelineRunner
from tranche.pipeline.store import enqueue

__all__ = [
    "BreakerPolicy",
    "CircuitBreaker",
    "InvalidStageOverrideError",
    "Item",
    "ItemNotFoundError",
    "ItemNotParkedError",
    "ItemView",
    "NewItem",
    "Next",
    "Pipeline",
    "PipelineDeclarationError",
    "PipelineError",
    "PipelineRunner",
    "RetryPolicy",
    "RetryableError",
    "Stage",
    "StageOverride",
    "StageStats",
    "TerminalError",
    "TraceEntry",
    "enqueue",
    "get_item",
    "item_trace",
    "items_by_trace_key",
    "override_key",
    "overrides_from_env",
    "retry_parked",
    "stage_stats",
]
