"""The assess stage in a real pipeline runner, against the cash-flow service failing on purpose."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from assessment_loans import make_loan
from sqlalchemy import Connection, Engine, func, select

from tranche.assessment.errors import LoanError
from tranche.assessment.projectors import BuiltinCashflowProjector, CashflowProjector
from tranche.assessment.remote import HttpCashflowClient
from tranche.assessment.rules import RiskRules
from tranche.assessment.service import CashflowServer
from tranche.assessment.slices import LoadedSlice
from tranche.assessment.stage import ASSESS, AssessStage
from tranche.assessment.tables import loan_assessments
from tranche.pipeline import BreakerPolicy, Item, NewItem, Pipeline, PipelineRunner, RetryPolicy, enqueue
from tranche.pipeline.tables import pipeline_items
from tranche.shared.clock import SystemClock
from tranche.shared.loan import Loan

LENDERS = ("lender-1", "lender-2")
LOANS = {
    (lender, f"L{i:04}"): make_loan(f"L{i:04}", lender_id=lender, outstanding=10_000 + i, term=6 + i % 30)
    for lender in LENDERS
    for i in range(400)
}
LOANS["lender-2", "BAD"] = make_loan("BAD", lender_id="lender-2", rate="-0.1")


def build(lender_id: str, rows: list[tuple[Any, ...]]) -> list[tuple[Loan, int]]:
    return [(LOANS[lender_id, loan_id], version) for loan_id, version in rows]


def load(
    conn: Connection, lender_id: str, wanted: Sequence[tuple[str, int]], rules: RiskRules
) -> LoadedSlice:
    return LoadedSlice(list(wanted), build)


def run(
    engine: Engine, projector: CashflowProjector, reported: list[tuple[str, LoanError]]
) -> dict[str, int]:
    def report(conn: Connection, item: Item, errors: list[LoanError]) -> None:
        reported.extend((item.id, error) for error in errors)

    stage = AssessStage(
        engine,
        projector,
        SystemClock(),
        load,
        report_errors=report,
        retry=RetryPolicy(max_attempts=50, initial_delay=0.01, max_delay=0.05),
        breaker=BreakerPolicy(failure_threshold=50, cooldown=0.05, max_cooldown=0.1),
    )
    pipeline = Pipeline("intake", [stage.stage()])
    with engine.begin() as conn:
        for lender in LENDERS:
            ids = sorted(loan_id for (owner, loan_id) in LOANS if owner == lender)
            for sequence, start in enumerate(range(0, len(ids), 100)):
                slice_ = [[loan_id, 1] for loan_id in ids[start : start + 100]]
                enqueue(
                    conn, "intake", NewItem(ASSESS, {"loans": slice_}, partition=lender, sequence=sequence)
                )
    runner = PipelineRunner(engine, [pipeline], clock=SystemClock())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runner.run_until_idle()
        with engine.begin() as conn:
            statuses = dict(
                conn.execute(
                    select(pipeline_items.c.status, func.count()).group_by(pipeline_items.c.status)
                ).all()
            )
        if set(statuses) <= {"done", "failed"}:
            return statuses
        time.sleep(0.02)
    raise AssertionError(f"items still unfinished: {statuses}")


def assessed_once(engine: Engine) -> None:
    with engine.begin() as conn:
        rows = conn.execute(select(loan_assessments.c.lender_id, loan_assessments.c.loan_id)).all()
    assert len(rows) == len(set(rows)) == len(LOANS) - 1


def test_with_a_third_of_calls_failing_every_loan_is_assessed_exactly_once(engine: Engine) -> None:
    reported: list[tuple[str, LoanError]] = []
    with (
        CashflowServer(seed=3) as server,
        HttpCashflowClient(server.url, timeout=5, batch_size=50) as client,
    ):
        server.set_faults(fail_rate=0.3, statuses=[429, 503], retry_after=0.01)
        statuses = run(engine, client, reported)
        assert server.counters["injected"] > 0
    assert statuses == {"done": 9}
    assessed_once(engine)
    assert [(error.loan_id, error.field) for _, error in reported] == [("BAD", "interest_rate")]
    assert "interest rate -0.1" in reported[0][1].message


def test_the_built_in_projector_assesses_the_same_slices_without_a_service(engine: Engine) -> None:
    reported: list[tuple[str, LoanError]] = []
    assert run(engine, BuiltinCashflowProjector(), reported) == {"done": 9}
    assessed_once(engine)
    assert len(reported) == 1
