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
