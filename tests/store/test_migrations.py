from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from tranche.store.migrate import HEADS, alembic_config, current_revisions, upgrade
from tranche.store.schema import load_all_tables


def test_migrations_create_exactly_the_declared_tables(engine: Engine) -> None:
    metadata = load_all_tables()
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    # Type affinities differ harmlessly between dialects; tables, columns and indexes must not.
    structural = [
        d
        for d in differences
        if d[0] in {"add_table", "remove_table", "add_column", "remove_column", "add_index", "remove_index"}
    ]
    assert structural == []


def test_upgrading_twice_changes_nothing(engine: Engine) -> None:
    upgrade(engine)
    upgrade(engine)


def test_the_declared_heads_are_those_of_the_migration_scripts(engine: Engine) -> None:
    scripts = ScriptDirectory.from_config(alembic_config(engine))
    assert set(scripts.get_heads()) == HEADS
    assert current_revisions(engine) == HEADS
