"""The composition root: the only place where tranche's objects are built and wired.

``bootstrap(settings)`` picks SQLite or PostgreSQL from ``TRANCHE_DATABASE_URL`` and the in-process bus or
RabbitMQ from ``TRANCHE_BUS_URL``; everything else receives what it needs from here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import Engine

from tranche.config import Settings
from tranche.shared.clock import Clock, SystemClock
from tranche.store.engine import create_store_engine
from tranche.store.migrate import upgrade


@dataclass
class Container:
    """What a running tranche process is made of."""

    settings: Settings
    engine: Engine
    clock: Clock
    extras: dict[str, object] = field(default_factory=dict)

    def close(self) -> None:
        self.engine.dispose()


def bootstrap(
    settings: Settings | None = None, *, clock: Clock | None = None, migrate: bool = True
) -> Container:
    settings = settings or Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = create_store_engine(settings.database_url)
    if migrate:
        upgrade(engine)
    return Container(settings=settings, engine=engine, clock=clock or SystemClock())
