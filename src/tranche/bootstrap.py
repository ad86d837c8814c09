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
from datetime import timedelta

from sqlalchemy import Connection, Engine

from tranche.assessment.projectors import CashflowProjector, make_cashflow_projector
from tranche.assessment.stage import ASSESS, AssessStage
from tranche.bus import Bus, EventCodec, Message, connect
from tranche.bus.outbox import OutboxRelay, add_to_outbox
from tranche.config import Settings
from tranche.intake import events as intake_events
from tranche.intake.archive import Archive, LocalArchive
from tranche.intake.assessing import DiffAssessment, assess_stage, load_for_assessment, report_refused
from tranche.intake.service import Intake
from tranche.intake.stages import IntakeStages
from tranche.ledger.drift import PortfolioDrifted
from tranche.ledger.handlers import LedgerHandlers, matching_subscriber
from tranche.ledger.reports import LedgerReports
from tranche.ledger.service import LedgerService
from tranche.market import LockedMarketplace, MarketNode
from tranche.matching.adapters import SqlMatchingRecord
from tranche.matching.events import BidsRolledBack, LoanFunded, OfferMatched
from tranche.matching.service import MatchingService
from tranche.pipeline import Pipeline, PipelineRunner, overrides_from_env
from tranche.settlement import SettlementNode
from tranche.shared.clock import Clock, SystemClock
from tranche.shared.compute import make_compute
from tranche.shared.ids import new_id
from tranche.store.engine import create_store_engine
from tranche.store.migrate import prepare_schema
from tranche.trading.adapters import SqlPortfolioStore
from tranche.trading.service import TradingService


@dataclass
class _Lifecycle:
    """What a running process starts and must stop: the relay, the timers, the worker threads."""

    workers_started: bool = False
    relay_task: asyncio.Task[None] | None = None
    stop: asyncio.Event | None = None
    timer_tasks: list[asyncio.Task[None]] = field(default_factory=list)


@dataclass(frozen=True)
class Container:
    """What a running tranche process is made of; built only by :func:`bootstrap`, read by everything else.

    ``market`` is set only in the process that holds the market role (the matcher's books live there).
    """

    settings: Settings
    engine: Engine
    clock: Clock
    archive: Archive
    intake: Intake
    intake_stages: IntakeStages
    projector: CashflowProjector
    pipelines: tuple[Pipeline, ...]
    runner: PipelineRunner
    bus: Bus
    codec: EventCodec
    ledger: LedgerService
    ledger_reports: LedgerReports
    trading: TradingService
    market: LockedMarketplace | None = None
    subscribers: tuple[Callable[[Bus], Awaitable[None]], ...] = ()
    timers: tuple[tuple[float, Callable[[], object]], ...] = ()
    _lifecycle: _Lifecycle = field(default_factory=_Lifecycle, repr=False, compare=False)

    def publish(self, conn: Connection, topic: str, event: object) -> None:
        """Publish a domain event with the state change in ``conn``'s transaction (through the outbox)."""
        add_to_outbox(conn, topic, event, codec=self.codec, now=self.clock.now())

    async def start_messaging(self) -> None:
        """Connect the bus, subscribe every context's handlers, and start relaying the outbox."""
        await self.bus.start()
        for subscribe in self.subscribers:
            await subscribe(self.bus)
        life = self._lifecycle
        life.stop = asyncio.Event()
        relay = OutboxRelay(self.engine, self.bus, clock=self.clock)
        life.relay_task = asyncio.create_task(relay.run(life.stop), name="outbox-relay")
        life.timer_tasks = [
            asyncio.create_task(_every(seconds, action, life.stop), name=f"timer-{action}")
            for seconds, action in self.timers
        ]

    async def stop_messaging(self) -> None:
        life = self._lifecycle
        if life.stop is not None and life.relay_task is not None:
            life.stop.set()
            for task in [life.relay_task, *life.timer_tasks]:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.bus.close()

    def start_workers(self) -> None:
        """Run the pipeline stages on background threads of this process (when it has the pipeline role)."""
        if "pipeline" not in self.settings.roles:
            return
        # The pool the stages compute in starts with them, so that the first tape does not wait for it.
        self.intake_stages.compute.start("tranche.intake.parsing", "tranche.assessment.slices")
        self.runner.start()
        self._lifecycle.workers_started = True

    def wake_workers(self) -> None:
        """New work was queued from this process: wake idle workers instead of waiting for their next poll."""
        self.runner.notify()

    def close(self) -> None:
        if self._lifecycle.workers_started:
            self.runner.stop()
        self.intake_stages.compute.close()
        self.projector.close()
        self.engine.dispose()


async def _every(seconds: float, action: Callable[[], object], stop: asyncio.Event) -> None:
    """Run ``action`` on a worker thread every ``seconds`` until ``stop``; a failure is logged, not fatal."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        if stop.is_set():
            return
        try:
            await asyncio.to_thread(action)
        except Exception:
            logging.getLogger(__name__).exception("timer %s failed", action)


def bootstrap(
    settings: Settings | None = None, *, clock: Clock | None = None, migrate: bool | None = None
) -> Container:
    """Build the process. ``migrate``: None migrates an embedded SQLite file and refuses a PostgreSQL store
    older than the code (``tranche migrate`` changes it); True migrates; False only checks."""
    settings = settings or Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    clock = clock or SystemClock()
    engine = create_store_engine(settings.database_url)
    prepare_schema(engine, migrate)
    archive = LocalArchive(settings.archive_dir)
    codec = EventCodec(
        intake_events.LoansListed,
        intake_events.LoansChanged,
        intake_events.LoansLeftActive,
        intake_events.LoansRejected,
        intake_events.LoansAssessed,
        OfferMatched,
        LoanFunded,
        BidsRolledBack,
        PortfolioDrifted,
    )

    def publish(conn: Connection, topic: str, event: object) -> None:
        add_to_outbox(conn, topic, event, codec=codec, now=clock.now())

    def prepare(topic: str, event: object) -> Message:
        """An event encoded ahead of the transaction that publishes it: the transaction stays short."""
        return codec.to_message(event, topic, message_id=new_id("evt"))

    # Decoding tapes and projecting cash flows run in this pool of processes, so that a tape uses every core.
    compute = make_compute(settings.parse_processes)
    projector = make_cashflow_projector(settings.cashflow_url)
    assess = AssessStage(
        engine, projector, clock, load_for_assessment, report_errors=report_refused, compute=compute
    )
    intake_stages = IntakeStages(
        engine,
        archive,
        clock,
        slice_size=settings.slice_size,
        publish=publish,
        prepare=prepare,
        compute=compute,
        # One more thread than computing processes: while they parse, it looks up and writes.
        diff_concurrency=settings.parse_processes + 1,
        next_stage=ASSESS,
        # With the built-in projection the diff assesses what it stores; an external service's calls go
        # through the assess stage, with its retries and breaker.
        assessment=DiffAssessment(assess, publish, prepare),
    )
    pipelines = (intake_stages.pipeline(more=[assess_stage(assess, publish, prepare)]),)
    runner = PipelineRunner(
        engine,
        list(pipelines),
        clock=clock,
        overrides=overrides_from_env(os.environ),
        partitions=settings.lenders,
    )
    ledger = LedgerService(engine, clock, drift_window=timedelta(seconds=settings.drift_window_seconds))
    trading = TradingService(SqlPortfolioStore(engine), clock)
    subscribers: list[Callable[[Bus], Awaitable[None]]] = []
    timers: list[tuple[float, Callable[[], object]]] = []
    if "ledger" in settings.roles:
        handlers = LedgerHandlers(ledger)
        settlement = SettlementNode(engine, handlers, publish)
        subscribers.append(matching_subscriber(handlers, codec, "match.#"))
        subscribers.append(settlement.subscriber(codec))
        timers.append((1.0, settlement.tick))
    market: LockedMarketplace | None = None
    if "market" in settings.roles:
        # The matcher's books live in this process only: one process of the deployment has this role.
        matching = MatchingService.rebuild(SqlMatchingRecord(engine, publish=publish))
        market = LockedMarketplace(trading, matching, settle=True)
        market.resync()
        subscribers.append(MarketNode(engine, market).subscriber(codec))
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
        ledger=ledger,
        ledger_reports=LedgerReports(engine),
        trading=trading,
        market=market,
        subscribers=tuple(subscribers),
        timers=tuple(timers),
    )
    return container
