"""The composition root: the only place where tranche's objects are built and wired.

``bootstrap(settings)`` picks SQLite or PostgreSQL from ``TRANCHE_DATABASE_URL`` and the in-process bus or
RabbitMQ from ``TRANCHE_BUS_URL``; everything else receives what it needs from here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from sqlalchemy import Engine

from tranche.config import Settings
from tranche.intake.archive import Archive, LocalArchive
from tranche.intake.service import Intake
from tranche.intake.stages import IntakeStages
from tranche.pipeline import Pipeline, PipelineRunner, overrides_from_env
from tranche.shared.clock import Clock, SystemClock
from tranche.store.engine import create_store_engine
from tranche.store.migrate import upgrade


@dataclass
class Container:
    """What a running tranche process is made of."""

    settings: Settings
    engine: Engine
    clock: Clock
    archive: Archive
    intake: Intake
    pipelines: list[Pipeline]
    runner: PipelineRunner
    extras: dict[str, object] = field(default_factory=dict)
    _workers_started: bool = False

    def start_workers(self) -> None:
        """Run the pipeline stages on background threads of this process."""
        self.runner.start()
        self._workers_started = True

    def wake_workers(self) -> None:
        """New work was queued from this process: wake idle workers instead of waiting for their next poll."""
        self.runner.notify()

    def close(self) -> None:
        if self._workers_started:
            self.runner.stop()
        self.engine.dispose()


def bootstrap(
    settings: Settings | None = None, *, clock: Clock | None = None, migrate: bool = True
) -> Container:
    settings = settings or Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    clock = clock or SystemClock()
    engine = create_store_engine(settings.database_url)
    if migrate:
        upgrade(engine)
    archive = LocalArchive(settings.archive_dir)
    intake_stages = IntakeStages(engine, archive, clock, slice_size=settings.slice_size)
    pipelines = [intake_stages.pipeline()]
    runner = PipelineRunner(
        engine, pipelines, clock=clock, overrides=overrides_from_env(os.environ), partitions=settings.lenders
    )
    container = Container(
        settings=settings,
        engine=engine,
        clock=clock,
        archive=archive,
        intake=Intake(engine, archive, clock),
        pipelines=pipelines,
        runner=runner,
    )
    container.extras["pipeline_runner"] = runner
    return container
