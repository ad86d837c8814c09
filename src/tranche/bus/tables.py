"""The bus's tables: the outbox (events written with the state change they describe, published by a relay)
and the inbox (event ids each consumer has handled, so that a redelivered event has no second effect)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, LargeBinary, String, Table, Text

from tranche.store.schema import metadata

bus_outbox = Table(
    "bus_outbox",
    metadata,
    # Publication order: the relay publishes unpublished rows by ascending seq.
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("topic", String(255), nullable=False),
    Column("type", String(128), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("headers", Text, nullable=True),  # JSON object of extra message headers
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),
    # The relay's scan: unpublished rows in seq order.
    Index("ix_bus_outbox_published_at", "published_at", "seq"),
)

bus_inbox = Table(
    "bus_inbox",
    metadata,
    Column("consumer", String(128), primary_key=True),
    Column("event_id", String(64), primary_key=True),
    Column("handled_at", DateTime(timezone=True), nullable=False),
)
