"""The composition root: the only place where tranche's objects are built and wired.

``bootstrap(settings)`` picks SQLite or PostgreSQL from ``TRANCHE_DATABASE_URL`` and the in-process bus or
RabbitMQ from ``TRANCHE_BUS_URL``; everything else receives what it needs from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine

from tranche.assessment.projectors import CashflowProjector, make_cashflow_projector
from tranche.assessment.stage import ASSESS, AssessStage
from tranche.bus import Bus, EventCodec, connect
from tranche.bus.outbox import OutboxRelay, add_to_outbox
from tranche.config import Settings
from tranche.intake import events as intake_events
from tranche.intake.archive import Archive, LocalArchive
from tranche.intake.assessing import assess_stage, load_versions, report_refused
from tranche.intake.parsing import InlineParser, ProcessPoolParser, SliceParser
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
    intake_stages: IntakeStages
    projector: CashflowProjector
    pipelines: list[Pipeline]
    runner: PipelineRunner
    bus: Bus
    codec: EventCodec
    subscribers: list[Callable[[Bus], Awaitable[None]]] = field(default_factory=list)
    extras: dict[str, object] = field(default_factory=dict)
    _workers_started: bool = False
    _relay_task: asyncio.Task[None] | None = None
    _relay_stop: asyncio.Event | None = None

    def publish(self, conn: Connection, topic: str, event: object) -> None:
        """Publish a domain event with the state change in ``conn``'s transaction (through the outbox)."""
        add_to_outbox(conn, topic, event, codec=self.codec, now=self.clock.now())

    async def start_messaging(self) -> None:
        """Connect the bus, subscribe every context's handlers, and start relaying the outbox."""
        await self.bus.start()
        for subscribe in self.subscribers:
            await subscribe(self.bus)
        self._relay_stop = asyncio.Event()
        relay = OutboxRelay(self.engine, self.bus, clock=self.clock)
        self._relay_task = asyncio.create_task(relay.run(self._relay_stop), name="outbox-relay")

    async def stop_messaging(self) -> None:
        if self._relay_stop is not None and self._relay_task is not None:
            self._relay_stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay_task
        await self.bus.close()

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
        self.intake_stages.parser.close()
        self.projector.close()
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
    codec = EventCodec(
        intake_events.LoansListed,
        intake_events.LoansChanged,
        intake_events.LoansLeftActive,
        intake_events.LoansRejected,
    )

    def publish(conn: Connection, topic: str, event: object) -> None:
        add_to_outbox(conn, topic, event, codec=codec, now=clock.now())

    parser: SliceParser = (
        ProcessPoolParser(settings.parse_processes) if settings.parse_processes > 0 else InlineParser()
    )
    intake_stages = IntakeStages(
        engine,
        archive,
        clock,
        slice_size=settings.slice_size,
        publish=publish,
        parser=parser,
        # One more thread than parsing processes: while they parse, it looks up and writes.
        diff_concurrency=settings.parse_processes + 1,
        next_stage=ASSESS,
    )
    projector = make_cashflow_projector(settings.cashflow_url)
    assess = AssessStage(engine, projector, clock, load_versions, report_errors=report_refused)
    pipelines = [intake_stages.pipeline(more=[assess_stage(assess)])]
    runner = PipelineRunner(
        engine, pipelines, clock=clock, overrides=overrides_from_env(os.environ), partitions=settings.lenders
    )
    container = Container(
        settings=settings,
        engine=engine,
        clock=clock,
        archive=archive,
        intake=Intake(engine, archive, clock),
        intake_stages=intake_stages,
        projector=projector,
        pipelines=pipelines,
        runner=runner,
        bus=connect(settings.bus_url),
        codec=codec,
    )
    container.extras["pipeline_runner"] = runner
    return container
