"""Schema migrations with Alembic: one branch per bounded context, all applied with ``upgrade heads``.

A process that starts on a store already at the newest schema does not load Alembic at all (about a tenth of
a worker's memory): :data:`HEADS` names the newest revision of every branch, and a test keeps it equal to
what the migration scripts declare.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")

HEADS = frozenset(
    {
        "assessment_0002",
        "bus_0001",
        "crm_0002",
        "intake_0003",
        "ledger_0001",
        "matching_0001",
        "pipeline_0001",
        "store_0001",
        "trading_0001",
    }
)
"""The newest revision of each context's branch."""


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def current_revisions(engine: Engine) -> frozenset[str]:
    """The revisions the store is at (none for an empty store)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return frozenset()
        return frozenset(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest schema of every context (idempotent)."""
    if current_revisions(engine) == HEADS:
        return
    from alembic import command

    command.upgrade(alembic_config(engine), "heads")


def downgrade_all(engine: Engine) -> None:
    from alembic import command

    command.downgrade(alembic_config(engine), "base")
