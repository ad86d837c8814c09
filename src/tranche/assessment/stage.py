"""The assess stage of a durable pipeline: project a slice of loan versions, then record their assessments.

The item's payload names the slice as ``{"loans": [[loan_id, version], ...]}`` within the item's partition
(the lender), as intake's diff stage hands it on. Loading those versions is intake's business, so the stage
is given a ``load_loans`` function; reporting the loans that cannot be assessed (to the batch's errors) is
given as ``report_errors``. With the built-in projection, making the loans, projecting and grouping them
runs through ``compute`` (a pool of processes in ``tranche serve``), and this process only reads and
writes. Failures of the projector's call become the pipeline's own: a retryable one is retried from this
stage (``Retry-After`` honoured; a 429 does not count against the breaker, since it says the service is
alive), a terminal one fails the item. A loan the projector refuses fails alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Engine

from tranche.assessment.errors import LoanError, RetryableServiceError, TerminalServiceError
from tranche.assessment.handlers import project_slice
from tranche.assessment.projectors import CashflowProjector
from tranche.assessment.rules import RiskRules
from tranche.assessment.slices import AssessedRows, LoadedSlice, assess_projected, project_and_assess
from tranche.assessment.store import latest_risk_rules, write_assessment_rows
from tranche.pipeline import BreakerPolicy, Item, Next, RetryableError, RetryPolicy, Stage, TerminalError
from tranche.shared.clock import Clock
from tranche.shared.compute import Compute, InlineCompute
from tranche.store.engine import reading

__all__ = ["ASSESS", "AssessStage", "LoadLoans", "ReportErrors"]

ASSESS = "intake.assess"

LoadLoans = Callable[[Connection, str, Sequence[tuple[str, int]], RiskRules], LoadedSlice]
"""(connection, lender_id, [(loan_id, version), ...], the lender's rules) -> the loan versions, in that order,
with what the rules read of them."""
ReportErrors = Callable[[Connection, Item, list[LoanError]], None]
"""Records, in the stage's transaction, the loans of an item that cannot be assessed."""


class AssessStage:
    """Builds the assess :class:`~tranche.pipeline.Stage`, bound to the store, a projector and the clock."""

    def __init__(
        self,
        engine: Engine,
        projector: CashflowProjector,
        clock: Clock,
        load_loans: LoadLoans,
        *,
        report_errors: ReportErrors | None = None,
        name: str = ASSESS,
        next_stage: str | None = None,
        dependency: str | None = "cashflow-service",
        concurrency: int = 2,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        compute: Compute | None = None,
    ) -> None:
        self.engine = engine
        self.projector = projector
        self.clock = clock
        self.load_loans = load_loans
        self.report_errors = report_errors
        self.name = name
        self.next_stage = next_stage
        self.dependency = dependency
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy(max_attempts=12, initial_delay=0.5, max_delay=60.0)
        self.breaker = breaker or BreakerPolicy()
        self.compute: Compute = compute or InlineCompute()

    def stage(self) -> Stage:
        return Stage(
            name=self.name,
            work=self.work,
            commit=self.commit,
            concurrency=self.concurrency,
            lease_seconds=120.0,
            retry=self.retry,
            dependency=self.dependency,
            breaker=self.breaker,
        )

    def work(self, item: Item) -> AssessedRows:
        """Load the slice and the lender's rules, project and group, outside any transaction."""
        lender_id = item.partition
        wanted = [(str(entry[0]), int(entry[1])) for entry in item.payload["loans"]]
        with reading(self.engine) as conn:
            rules = latest_risk_rules(conn, lender_id)
            loaded = self.load_loans(conn, lender_id, wanted, rules.rules)
        now = self.clock.now()
        sqlite = self.engine.dialect.name == "sqlite"
        if self.projector.in_process:
            return self.compute.run(project_and_assess, loaded, lender_id, rules, now, sqlite)
        loans = loaded.loans(lender_id)
        try:
            results = project_slice(self.projector, [loan for loan, _ in loans])
        except RetryableServiceError as exc:
            raise RetryableError(
                exc.message, retry_after=exc.retry_after, dependency_down=exc.status != 429
            ) from exc
        except TerminalServiceError as exc:
            raise TerminalError(exc.message) from exc
        # An external service's schedule cannot be projected again from the loan: it is kept.
        return assess_projected(loans, results, rules, now, sqlite, keep_schedule=True)

    def commit(self, conn: Connection, item: Item, assessed: AssessedRows) -> Next:
        """Append the assessments (and report the refused loans) in the transaction that moves the item.
        Idempotent: a slice assessed again after a crash stores each assessment once."""
        write_assessment_rows(conn, assessed.rows)
        if assessed.refused and self.report_errors is not None:
            self.report_errors(conn, item, assessed.errors(item.partition))
        # The item carries on with what was assessed, each loan with its risk group.
        return Next(
            stage=self.next_stage,
            payload={**item.payload, "loans": assessed.assessed, "refused": len(assessed.refused)},
        )
