"""Investors: registered by operators before they deposit cash or define portfolios."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, insert, select

from tranche.crm.errors import UnknownInvestorError
from tranche.crm.tables import investors


def register_investor(
    conn: Connection, investor_id: str, name: str, *, at: datetime, by: str = "operator"
) -> bool:
    """Register an investor; False when it already exists (idempotent)."""
    if conn.execute(select(investors.c.investor_id).where(investors.c.investor_id == investor_id)).first():
        return False
    conn.execute(insert(investors).values(investor_id=investor_id, name=name, created_at=at, created_by=by))
    return True


def ensure_investor(conn: Connection, investor_id: str) -> None:
    """Raise :class:`UnknownInvestorError` unless ``investor_id`` is registered."""
    if not conn.execute(
        select(investors.c.investor_id).where(investors.c.investor_id == investor_id)
    ).first():
        raise UnknownInvestorError(
            f"no investor is registered as {investor_id!r}", record=investor_id, field="investor_id"
        )


def investor_name(conn: Connection, investor_id: str) -> str:
    row = conn.execute(select(investors.c.name).where(investors.c.investor_id == investor_id)).first()
    if row is None:
        raise UnknownInvestorError(
            f"no investor is registered as {investor_id!r}", record=investor_id, field="investor_id"
        )
    return str(row.name)
