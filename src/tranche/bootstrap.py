"""The composition root: the only place where tranche's objects are built and wired.

``bootstrap(settings)`` picks SQLite or PostgreSQL from ``TRANCHE_DATABASE_URL`` and the in-process bus or
RabbitMQ from ``TRANCHE_BUS_URL``; everything else receives what it needs from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Connection, Engine

from tranche.assessment.projectors import CashflowProjector, make_cashflow_projector
from tranche.assessment.stage import ASSESS, AssessStage
from tranche.bus import Bus, EventCodec, Message, connect
from tranche.bus.dispatch import subscribe_handlers
from tranche.bus.outbox import OutboxRelay, add_to_outbox
from tranche.bus.owned import OwnedSubscriber
from tranche.config import Settings
from tranche.intake import events as intake_events
from tranche.intake.archive import Archive, LocalArchive
from tranche.intake.assessing import DiffAssessment, assess_stage, load_for_assessment, report_refused
from tranche.intake.service import Intake
from tranche.intake.stages import IntakeStages
from tranche.ledger import HANDLERS as LEDGER_HANDLERS
from tranche.ledger import TIMER_SECONDS as LEDGER_TIMER_SECONDS
from tranche.ledger import (
    CashAvailable,
    LedgerReports,
    LedgerService,
    PortfolioDrifted,
    SqlLedgerStore,
    serve_reservations,
    serve_statements,
)
from tranche.ledger import on_timer as ledger_on_timer
from tranche.matching import (
    BidsRolledBack,
    LoanFunded,
    MatchingService,
    OfferMatched,
    OffersRefused,
    SqlMatchingRecord,
)
from tranche.pipeline import Pipeline, PipelineRunner, overrides_from_env
from tranche.shared.clock import Clock, SystemClock
from tranche.shared.compute import make_compute
from tranche.shared.ids import new_id
from tranche.shared.messages import Event, bind
from tranche.shared.metrics import Metrics
from tranche.store.engine import create_store_engine
from tranche.store.migrate import prepare_schema
from tranche.store.ownership import Claim, Ownership, Tenure, owner_of
from tranche.trading import (
    HANDLERS as MARKET_HANDLERS,
)
from tranche.trading import (
    BusReservations,
    LedgerQueries,
    Market,
    PortfolioChanged,
    SqlPortfolioStore,
    TradingService,
)

_STOP_GRACE_SECONDS = 5.0


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
    ``ownership`` holds this process's claims on singleton jobs (the relay, the matcher, the drift timer).
    """

    settings: Settings
    engine: Engine
    ownership: Ownership
    metrics: Metrics
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
    market: Market | None = None
    subscribers: tuple[Callable[[Bus], Awaitable[None]], ...] = ()
    timers: tuple[tuple[float, Callable[[], object]], ...] = ()

    _lifecycle: _Lifecycle = field(default_factory=_Lifecycle, repr=False, compare=False)

    def publish(self, conn: Connection, topic: str, event: object) -> None:
        """Publish a domain event with the state change in ``conn``'s transaction (through the outbox)."""
        add_to_outbox(conn, topic, event, codec=self.codec, now=self.clock.now())

    async def start_messaging(self) -> None:
        """Connect the bus, subscribe every context's handlers, take up this process's singleton jobs (or
        stand by for them), and start relaying the outbox (while this process owns the relay)."""
        # Every process can relay the outbox: one owns the job, the others stand by.
        relaying = self.ownership.get("outbox-relay") or self.ownership.claim("outbox-relay")
        await asyncio.to_thread(self.ownership.start)
        await self.bus.start()
        for subscribe in self.subscribers:
            await subscribe(self.bus)
        life = self._lifecycle
        life.stop = asyncio.Event()
        relay = OutboxRelay(self.engine, self.bus, clock=self.clock, claim=relaying)
        life.relay_task = asyncio.create_task(relay.run(life.stop), name="outbox-relay")
        life.timer_tasks = [
            asyncio.create_task(_every(seconds, action, life.stop), name=f"timer-{action}")
            for seconds, action in self.timers
        ]

    async def stop_messaging(self) -> None:
        life = self._lifecycle
        if life.stop is not None and life.relay_task is not None:
            life.stop.set()
            tasks = [life.relay_task, *life.timer_tasks]
            # The relay may wait for handlers to finish what it published (the embedded bus confirms a publish
            # once handled); past a grace period it is cancelled: what it did not mark stays in the outbox.
            _done, late = await asyncio.wait(tasks, timeout=_STOP_GRACE_SECONDS)
            for task in late:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for subscriber in self.subscribers:
            if isinstance(subscriber, OwnedSubscriber):
                await subscriber.close()
        await self.bus.close()
        await asyncio.to_thread(self.ownership.stop)

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


def _fenced(ownership: Ownership, claim: Claim, publish: Callable[..., None]) -> Callable[..., None]:
    """``publish`` that first checks, in the same transaction, that this process still owns ``claim``'s job
    (once ownership runs: a process that never starts messaging is alone, as a one-off command is)."""

    def fenced(conn: Connection, *what: object) -> None:
        if ownership.running:
            claim.fence(conn)
        publish(conn, *what)

    return fenced


def _while_owned(claim: Claim, action: Callable[[], object]) -> Callable[[], object]:
    def owned() -> object:
        return action() if claim.held else None

    return owned


def _epoch_of(conn: Connection, job: str) -> int:
    from sqlalchemy import select

    from tranche.store.tables import job_owners

    return int(conn.execute(select(job_owners.c.epoch).where(job_owners.c.job == job)).scalar() or 0)


def _take_over(
    market: Market, record: SqlMatchingRecord, *, built_when_free_at: tuple[Tenure | None, int]
) -> Callable[[Tenure], None]:
    """On taking the market over: rebuild the books from the store (unless they were built while nobody owned
    the market and this is the first tenure since: the embedded start, where nothing changed them), then settle
    what was left placed and hand the books the buy offers trading issued that they never recorded."""
    holder, epoch = built_when_free_at

    def prepare(tenure: Tenure) -> None:
        if not (holder is None and tenure.epoch == epoch + 1):
            logging.getLogger(__name__).info(
                "market: rebuilding the books from the store (epoch %d)", tenure.epoch
            )
            market.rebuild(MatchingService.rebuild(record))
        market.resync()

    return prepare


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
        PortfolioChanged,
        OffersRefused,
        CashAvailable,
    )

    def publish(conn: Connection, topic: str, event: object) -> None:
        add_to_outbox(conn, topic, event, codec=codec, now=clock.now())

    def emit(conn: Connection, event: object) -> None:
        """Publish an event through the outbox, in ``conn``'s transaction, under the topic it declares."""
        if not isinstance(event, Event):
            raise TypeError(f"{type(event).__name__} is not an Event")
        add_to_outbox(conn, event.topic, event, codec=codec, now=clock.now())

    def prepare(topic: str, event: object) -> Message:
        """An event encoded ahead of the transaction that publishes it: the transaction stays short."""
        return codec.to_message(event, topic, message_id=new_id("evt"))

    # Decoding tapes and projecting cash flows run in this pool of processes, so that a tape uses every core.
    compute = make_compute(settings.parse_processes, run_dir=settings.run_dir)
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
        name=settings.worker_name,
    )
    if settings.lenders:
        logging.getLogger(__name__).warning(
            "TRANCHE_LENDERS is ignored: every pipeline worker serves every lender; pin a lender to a worker "
            "at run time instead (PUT /v1/pipeline/pins/{lender})"
        )
    ownership = Ownership(engine, ttl=settings.ownership_ttl, heartbeat=settings.ownership_heartbeat)
    bus = connect(settings.bus_url)
    ledger_store = SqlLedgerStore(engine, clock)
    ledger = LedgerService(ledger_store, clock, drift_window=timedelta(seconds=settings.drift_window_seconds))
    ledger_reports = LedgerReports(ledger_store)
    trading = TradingService(SqlPortfolioStore(engine, emit), clock, ledger=LedgerQueries(ledger_reports))
    subscribers: list[Callable[[Bus], Awaitable[None]]] = []
    timers: list[tuple[float, Callable[[], object]]] = []
    if "ledger" in settings.roles:
        # Fundings, roll-backs and loan versions in the order they were published (one at a time: a funding
        # before the repayments of its loan); reservations and statements served on request.
        ledger_handlers = bind(LEDGER_HANDLERS, ledger=ledger, engine=engine)

        async def ledger_role(bus: Bus) -> None:
            await subscribe_handlers(bus, codec, ledger_handlers, group="ledger")
            await serve_reservations(bus, codec, ledger)
            await serve_statements(bus, codec, ledger_reports)

        subscribers.append(ledger_role)
        # The timer is a singleton job: it runs in the process that owns it, and its transactions are fenced.
        drift = ownership.claim("ledger-drift")

        def drift_fence(conn: Connection) -> None:
            if ownership.running:
                drift.fence(conn)

        timer_ledger = LedgerService(
            SqlLedgerStore(engine, clock, guard=drift_fence),
            clock,
            drift_window=timedelta(seconds=settings.drift_window_seconds),
        )
        timer = functools.partial(ledger_on_timer, ledger=timer_ledger)
        timers.append((LEDGER_TIMER_SECONDS, _while_owned(drift, timer)))
    market: Market | None = None
    if "market" in settings.roles:
        # The matcher's books live in the one process that owns the job "market"; other market processes
        # stand by and rebuild the books from the store when they take over.
        claim = ownership.claim("market")
        record = SqlMatchingRecord(engine, publish=_fenced(ownership, claim, emit))
        with engine.connect() as conn:
            before = owner_of(conn, "market"), _epoch_of(conn, "market")
        # The market asks the ledger role to reserve over the bus, whichever process that role runs in.
        reservations = BusReservations(bus, codec)
        market = Market(trading, MatchingService.rebuild(record), reservations)
        bound = bind(MARKET_HANDLERS, market=market, engine=engine, publish=emit, clock=clock)
        take_over = _take_over(market, record, built_when_free_at=before)

        async def subscribe_market(bus: Bus) -> None:
            reservations.attach(asyncio.get_running_loop())
            tenure = claim.tenure
            if tenure is not None:
                await asyncio.to_thread(take_over, tenure)
            await subscribe_handlers(bus, codec, bound, group="market")

        subscribers.append(OwnedSubscriber(claim, subscribe_market))
        timers.append((2.0, _while_owned(claim, market.settle_unsettled)))
    container = Container(
        settings=settings,
        engine=engine,
        ownership=ownership,
        metrics=Metrics(),
        clock=clock,
        archive=archive,
        intake=Intake(engine, archive, clock),
        intake_stages=intake_stages,
        projector=projector,
        pipelines=pipelines,
        runner=runner,
        bus=bus,
        codec=codec,
        ledger=ledger,
        ledger_reports=ledger_reports,
        trading=trading,
        market=market,
        subscribers=tuple(subscribers),
        timers=tuple(timers),
    )
    return container
