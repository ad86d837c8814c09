"""CRM's tables: lenders and their configuration, which operators change without code, and investors.

Configuration is versioned: every change appends a row; the newest applies; nothing is overwritten.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Integer, String, Table

from tranche.store.schema import metadata

lenders = Table(
    "crm_lenders",
    metadata,
    Column("lender_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

lender_config = Table(
    "crm_lender_config",
    metadata,
    Column("lender_id", String(64), ForeignKey("crm_lenders.lender_id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("config", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(64), nullable=False),
)

investors = Table(
    "crm_investors",
    metadata,
    Column("investor_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(64), nullable=False),
)
