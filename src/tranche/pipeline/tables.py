"""The pipeline's tables: a work queue of items and an append-only trace of their transitions."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, String, Table, Text

from tranche.store.schema import metadata

pipeline_items = Table(
    "pipeline_items",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("pipeline", String(64), nullable=False),
    Column("stage", String(128), nullable=False),
    Column("partition", String(128), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    # When a live item may next be claimed: its enqueue time when ready (for FIFO order), the retry time when
    # waiting to retry, the lease expiry when leased. NULL once the item stops (done, failed, parked).
    Column("next_run_at", DateTime(timezone=True), nullable=True),
    Column("lease_owner", String(128), nullable=True),
    # Fencing token: new on every claim, so a worker whose lease was taken over can never commit.
    Column("lease_token", String(32), nullable=True),
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("trace_key", String(128), nullable=True),
    Column("parent_id", String(40), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Claims: the due items of one stage by status, oldest first. Also serves the per-stage counts.
    Index("ix_pipeline_items_claim", "pipeline", "stage", "status", "next_run_at"),
    # Ordered stages: is an earlier item of this partition still unfinished?
    Index("ix_pipeline_items_order", "pipeline", "partition", "status", "sequence"),
    Index("ix_pipeline_items_trace_key", "trace_key"),
)

pipeline_trace = Table(
    "pipeline_trace",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("item_id", String(40), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("stage", String(128), nullable=False),
    Column("event", String(24), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("detail", Text, nullable=True),
    Index("ix_pipeline_trace_item_id", "item_id"),
    # Completions in the last minute, per stage.
    Index("ix_pipeline_trace_at", "at"),
)

# The worker processes running stages, each registered while it runs, with a heartbeat. A lease names its
# holder's ``id``: when the heartbeat stops (or the same node's next run finds the process gone) the leases
# are handed back at once instead of waiting for them to run out.
pipeline_workers = Table(
    "pipeline_workers",
    metadata,
    Column("id", String(128), primary_key=True),
    # The name pins refer to; stable across restarts (TRANCHE_WORKER_NAME, else the host name).
    Column("name", String(64), nullable=False),
    # Host name, boot id and pid namespace: two rows with the same node can judge each other's pid.
    Column("node", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    # When the process started, as the kernel counts it: tells a reused pid from the one registered.
    Column("process_start", String(32), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
)

# Lenders (partitions) an operator pinned to a worker name; any worker serves the others.
pipeline_pins = Table(
    "pipeline_pins",
    metadata,
    Column("partition", String(128), primary_key=True),
    Column("worker", String(64), nullable=False),
    Column("pinned_at", DateTime(timezone=True), nullable=False),
)
