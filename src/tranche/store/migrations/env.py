"""Alembic environment: runs on the Engine handed over by ``tranche.store.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from tranche.store.schema import load_all_tables

engine: Engine = context.config.attributes["engine"]
target_metadata = load_all_tables()

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
