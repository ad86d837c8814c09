"""Schema migrations with Alembic: one branch per bounded context, all applied with ``upgrade heads``.

A process that starts on a store already at the newest schema does not load Alembic at all (about a tenth of
a worker's memory): :data:`HEADS` names the newest revision of every branch, and a test keeps it equal to
what the migration scripts declare. Revisions are named ``<branch>_<NNNN>``, numbered in order along their
branch, so that comparing numbers tells an older schema from a newer one without loading the scripts.

Who changes the schema:

- ``tranche migrate`` is the one step that does, in the distributed mode (PostgreSQL). It is safe to run
  from several processes at once: each waits on one advisory lock, and the ones that come after the first
  find the schema up to date. Every other process only checks (:func:`check_schema`) and refuses to start on
  a schema older than its code, naming the command to run.
- The embedded mode (a SQLite file) needs no step: the process migrates its own file as it starts
  (:func:`prepare_schema`); two processes opening one file at once queue on SQLite's write lock, and the
  second finds the work done.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

from tranche.shared.errors import TrancheError

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger("tranche.store.migrate")

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x7472_616E_6D69_6772  # pg_advisory_lock key of schema changes ("tranmigr")

HEADS = frozenset(
    {
        "assessment_0002",
        "bus_0001",
        "crm_0002",
        "intake_0003",
        "ledger_0003",
        "matching_0002",
        "pipeline_0002",
        "store_0001",
        "trading_0002",
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


class SchemaOutdatedError(TrancheError):
    """The store's schema is older than this code (or there is none yet): run ``tranche migrate``."""

    code = "schema_outdated"


def _branch_and_number(revision: str) -> tuple[str, int]:
    branch, _, number = revision.rpartition("_")
    return branch, int(number)


def schema_lag(engine: Engine) -> tuple[list[str], list[str]]:
    """What the store lacks of this code's :data:`HEADS` (``behind``: revisions to apply), and which of its
    revisions are newer than this code knows (``ahead``: a newer release migrated it)."""
    stored = {_branch_and_number(r)[0]: _branch_and_number(r)[1] for r in current_revisions(engine)}
    behind: list[str] = []
    ahead: list[str] = []
    for head in sorted(HEADS):
        branch, number = _branch_and_number(head)
        have = stored.get(branch)
        if have is None or have < number:
            behind.append(head)
        elif have > number:
            ahead.append(f"{branch}_{have:04d}")
    return behind, ahead


def check_schema(engine: Engine) -> None:
    """Raise :class:`SchemaOutdatedError` unless the store has every revision this code needs. A store
    migrated by a newer release is accepted (with a warning): its migrations add, they do not take away."""
    behind, ahead = schema_lag(engine)
    if behind:
        where = engine.url.render_as_string(hide_password=True)
        if len(behind) == len(HEADS) and not ahead and not current_revisions(engine):
            state = "has no tranche schema yet"
        else:
            state = f"lacks the schema revisions {', '.join(behind)}"
        raise SchemaOutdatedError(
            f"the database {where} {state}: run `tranche migrate` (with the same TRANCHE_DATABASE_URL) "
            "before starting tranche",
            field="TRANCHE_DATABASE_URL",
        )
    if ahead:
        log.warning("the store has schema revisions newer than this code: %s", ", ".join(ahead))


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """On PostgreSQL, one schema change at a time across every process (a session advisory lock)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        got = conn.execute(text(f"SELECT pg_try_advisory_lock({MIGRATION_LOCK})")).scalar_one()
        if not got:
            log.info("another process is migrating the schema; waiting for it")
            conn.execute(text(f"SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            conn.commit()


def upgrade(engine: Engine) -> bool:
    """Bring the database to the newest schema of every context (idempotent, safe to run concurrently);
    returns whether anything was applied."""
    if not schema_lag(engine)[0]:
        return False
    with _migration_lock(engine):
        # Whoever held the lock before us may have done the work.
        if not schema_lag(engine)[0]:
            return False
        from alembic import command

        command.upgrade(alembic_config(engine), "heads")
    return True


def prepare_schema(engine: Engine, migrate: bool | None = None) -> None:
    """What a starting process does about the schema: ``migrate=None`` migrates a SQLite file (the embedded
    mode needs no step of its own) and only checks PostgreSQL; True migrates, False only checks."""
    if migrate is None:
        migrate = engine.dialect.name == "sqlite"
    if migrate:
        upgrade(engine)
    else:
        check_schema(engine)


def downgrade_all(engine: Engine) -> None:
    from alembic import command

    command.downgrade(alembic_config(engine), "base")
