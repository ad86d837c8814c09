"""Lenders and their versioned configuration."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, func, insert, select

from tranche.crm.errors import UnknownLenderError
from tranche.crm.tables import lender_config, lenders


class LenderConfig(BaseModel):
    """What an operator can change about a lender without code."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_double_amounts: bool = Field(
        False, description="read BSON doubles in amounts by their shortest repr instead of rejecting them"
    )
    retained_share: Decimal = Field(
        Decimal("0.05"), ge=0, le=1, description="share of each loan's outstanding principal the lender keeps"
    )
    margin: Decimal = Field(
        Decimal("0.01"),
        ge=0,
        le=Decimal("0.5"),
        description="platform margin: lender rate minus investor rate",
    )


def register_lender(
    conn: Connection, lender_id: str, name: str, *, at: datetime, by: str = "operator"
) -> bool:
    """Register a lender with the default configuration; False when it already exists (idempotent)."""
    if conn.execute(select(lenders.c.lender_id).where(lenders.c.lender_id == lender_id)).first():
        return False
    conn.execute(insert(lenders).values(lender_id=lender_id, name=name, created_at=at))
    conn.execute(
        insert(lender_config).values(
            lender_id=lender_id, version=1, config=_dump(LenderConfig()), created_at=at, created_by=by
        )
    )
    return True


def configure_lender(conn: Connection, lender_id: str, config: LenderConfig, *, at: datetime, by: str) -> int:
    """Append a new configuration version; returns its number."""
    ensure_lender(conn, lender_id)
    current = conn.execute(
        select(func.max(lender_config.c.version)).where(lender_config.c.lender_id == lender_id)
    ).scalar_one()
    version = int(current or 0) + 1
    conn.execute(
        insert(lender_config).values(
            lender_id=lender_id, version=version, config=_dump(config), created_at=at, created_by=by
        )
    )
    return version


def ensure_lender(conn: Connection, lender_id: str) -> None:
    if not conn.execute(select(lenders.c.lender_id).where(lenders.c.lender_id == lender_id)).first():
        raise UnknownLenderError(
            f"no lender is registered as {lender_id!r}", record=lender_id, field="lender_id"
        )


def lender_config_of(conn: Connection, lender_id: str) -> tuple[int, LenderConfig]:
    """The configuration in force and its version."""
    row = conn.execute(
        select(lender_config.c.version, lender_config.c.config)
        .where(lender_config.c.lender_id == lender_id)
        .order_by(lender_config.c.version.desc())
        .limit(1)
    ).first()
    if row is None:
        raise UnknownLenderError(
            f"no lender is registered as {lender_id!r}", record=lender_id, field="lender_id"
        )
    return int(row.version), LenderConfig.model_validate(row.config)


def _dump(config: LenderConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")
