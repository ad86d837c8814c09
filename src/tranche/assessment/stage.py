"""The assess stage of a durable pipeline: project a slice of loan versions, then record their assessments.

The item's payload names the slice as ``{"loans": [[loan_id, version], ...]}`` within the item's partition
(the lender), as intake's diff stage hands it on. Loading those versions is intake's business, so the stage
is given a ``load_loans`` function; reporting the loans that cannot be assessed (to the batch's errors) is
given as ``report_errors``. Failures of the projector's call become the pipeline's own: a retryable one is
retried from this stage (``Retry-After`` honoured; a 429 does not count against the breaker, since it says the
service is alive), a terminal one fails the item. A loan the projector refuses fails alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from tranche.assessment.errors import LoanError, RetryableServiceError, TerminalServiceError
from tranche.assessment.handlers import project_slice, record_assessments
from tranche.assessment.projection import Projection
from tranche.assessment.projectors import CashflowProjector
from tranche.intake.loan import Loan
from tranche.pipeline import BreakerPolicy, Item, Next, RetryableError, RetryPolicy, Stage, TerminalError
from tranche.shared.clock import Clock
from tranche.store.engine import reading

__all__ = ["ASSESS", "AssessStage", "LoadLoans", "ReportErrors"]

ASSESS = "intake.assess"

LoadLoans = Callable[[Connection, str, Sequence[tuple[str, int]]], list[tuple[Loan, int]]]
"""(connection, lender_id, [(loan_id, version), ...]) -> the loan versions, in that order."""
ReportErrors = Callable[[Connection, Item, list[LoanError]], None]
"""Records, in the stage's transaction, the loans of an item that cannot be assessed."""


@dataclass(frozen=True, slots=True)
class Projected:
    """What the stage's work hands to its commit."""

    loans: list[tuple[Loan, int]]
    results: list[Projection | LoanError]


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
        keep_schedule: bool = True,
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
        self.keep_schedule = keep_schedule

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

    def work(self, item: Item) -> Projected:
        """Load the slice and project it, outside any transaction."""
        wanted = [(str(entry[0]), int(entry[1])) for entry in item.payload["loans"]]
        with reading(self.engine) as conn:
            loans = self.load_loans(conn, item.partition, wanted)
        try:
            results = project_slice(self.projector, [loan for loan, _ in loans])
        except RetryableServiceError as exc:
            raise RetryableError(
                exc.message, retry_after=exc.retry_after, dependency_down=exc.status != 429
            ) from exc
        except TerminalServiceError as exc:
            raise TerminalError(exc.message) from exc
        return Projected(loans, results)

    def commit(self, conn: Connection, item: Item, projected: Projected) -> Next:
        """Record the assessments (and report the refused loans) in the transaction that moves the item."""
        outcome = record_assessments(conn, projected.loans, projected.results, self.clock, self.keep_schedule)
        if outcome.errors and self.report_errors is not None:
            self.report_errors(conn, item, outcome.errors)
        # The item carries on with what was assessed, each loan with its risk group.
        assessed = [[a.loan_id, a.loan_version, a.risk_group] for a in outcome.assessments]
        return Next(
            stage=self.next_stage, payload={**item.payload, "loans": assessed, "refused": len(outcome.errors)}
        )
