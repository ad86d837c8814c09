"""Assessment throughput: cash-flow projections, risk groups, stored assessments, the HTTP service.

    python bench/assessment.py            200,000 loans (20,000 through the HTTP service)
    python bench/assessment.py --quick    20,000 loans (5,000 through the HTTP service)

The loans: annuity (70 %), linear (20 %) and bullet (10 %) loans of 500-50,000 EUR at 3-36 %, terms of 6-60
months (one in twenty 61-360), each somewhere in its term. They are projected in slices of 1,000, as the
intake pipeline's assess stage does.

Figures, per second of wall time on one core:
- ``project_many``: projections with every period's principal and interest in minor units;
- ``assess``: projection + risk group by the default rules (the stage's pure work);
- ``store``: the assessments appended to SQLite (WAL, one transaction per slice), with and without the
  schedule kept as JSON;
- ``http``: the same projection through the stand-alone service over loopback (one call per slice).

The floor is numpy-financial's vectorised ``ppmt``/``ipmt`` over the same slices, every period of every loan
flattened into one array (float amounts, no rounding, no result objects): the arithmetic alone.
numpy-financial one loan at a time is printed too, as what the obvious code costs. Rates are per second of
CPU time of this process, so that a busy machine does not distort them; wall time is printed beside.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import numpy_financial as npf

from tranche.assessment.domain import assess_slice
from tranche.assessment.projection import add_months, project_many, remaining_term
from tranche.assessment.remote import HttpCashflowClient
from tranche.assessment.service import CashflowServer
from tranche.assessment.store import write_assessments
from tranche.shared.loan import Borrower, Loan, LoanStatus, ScheduleType
from tranche.store.engine import create_store_engine
from tranche.store.migrate import upgrade

SLICE = 1000
NOW = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)


def make_loans(count: int, seed: int = 42) -> list[Loan]:
    rng = random.Random(seed)
    kinds = [ScheduleType.ANNUITY] * 7 + [ScheduleType.LINEAR] * 2 + [ScheduleType.BULLET]
    loans: list[Loan] = []
    for i in range(count):
        term = rng.randint(61, 360) if rng.random() < 0.05 else rng.randint(6, 60)
        issued = date(2024, 1, 1 + i % 28)
        principal = rng.randint(500, 50_000) * 100
        paid = rng.randint(0, term - 1)
        loans.append(
            Loan(
                lender_id=f"len_{i % 20:02d}",
                loan_id=f"loan_{i:08d}",
                status=LoanStatus.ACTIVE,
                currency="EUR",
                principal=principal,
                outstanding_principal=principal * (term - paid) // term,
                interest_rate=Decimal(rng.randint(300, 3600)) / 10_000,
                term_months=term,
                schedule_type=rng.choice(kinds),
                issue_date=issued,
                borrower=Borrower(
                    country=rng.choice(["EE", "LV", "LT", "ES"]),
                    age=rng.randint(18, 75),
                    income_monthly=rng.randint(800, 8000) * 100,
                    credit_score=rng.randint(300, 850),
                ),
                next_payment_date=add_months(issued, paid + 1),
            )
        )
    return loans


def slices(loans: list[Loan]) -> list[list[Loan]]:
    return [loans[i : i + SLICE] for i in range(0, len(loans), SLICE)]


def timed(label: str, count: int, run: Callable[[], object], repeat: int = 1) -> float:
    """Best of ``repeat`` runs, per second of CPU time of this process (the machine may be shared; the
    work is single-threaded except the HTTP service, whose server thread is in this process too)."""
    best = wall = float("inf")
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        run()
        best = min(best, time.process_time() - cpu)
        wall = min(wall, time.perf_counter() - started)
    rate = count / best
    print(
        f"  {label:<46} {rate:>10,.0f} /s {best / count * 1e6:8.2f} µs CPU  {wall / count * 1e6:8.2f} µs wall"
    )
    return rate


def floor_vectorised(parts: list[list[Loan]]) -> None:
    """numpy-financial's ppmt and ipmt over each slice's periods, flattened (no padding to the longest term)."""
    for part in parts:
        n = np.array([remaining_term(loan) for loan in part])
        rate = np.array([float(loan.interest_rate) for loan in part]) / 12
        pv = np.array([loan.outstanding_principal for loan in part], dtype=np.float64)
        starts = np.cumsum(n) - n
        per = np.arange(n.sum()) - np.repeat(starts, n) + 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            args = (np.repeat(rate, n), per, np.repeat(n, n), np.repeat(pv, n))
            npf.ppmt(*args)
            npf.ipmt(*args)


def one_at_a_time(loans: list[Loan]) -> None:
    for loan in loans:
        n = remaining_term(loan)
        periods = np.arange(1, n + 1)
        rate = float(loan.interest_rate) / 12
        npf.ppmt(rate, periods, n, loan.outstanding_principal)
        npf.ipmt(rate, periods, n, loan.outstanding_principal)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    args = parser.parse_args()
    count, http_count = (20_000, 5_000) if args.quick else (200_000, 20_000)
    loans = make_loans(count)
    parts = slices(loans)
    pairs = [[(loan, 1) for loan in part] for part in parts]
    periods = sum(remaining_term(loan) for loan in loans)
    print(
        f"assessment: {count:,} loans, {periods:,} periods ({periods / count:.1f} per loan), slices of {SLICE}"
    )
    project_many(parts[0])  # warm up numpy

    figures: dict[str, float] = {}
    print("floor")
    figures["floor_npf_vectorised_per_s"] = timed(
        "numpy-financial vectorised (floats, no rounding)", count, lambda: floor_vectorised(parts), repeat=2
    )
    sample = loans[: count // 20]
    figures["npf_one_loan_at_a_time_per_s"] = timed(
        "numpy-financial one loan at a time", len(sample), lambda: one_at_a_time(sample)
    )

    print("tranche")
    figures["project_many_per_s"] = timed(
        "project_many (minor units, exact totals)",
        count,
        lambda: [len(project_many(p)) for p in parts],
        repeat=3,
    )

    def assess_all() -> int:
        done = 0
        for part, pair in zip(parts, pairs, strict=True):
            done += len(assess_slice(pair, project_many(part), {}, NOW.date(), NOW)[0])
        return done

    figures["assess_per_s"] = timed("project + risk group (default rules)", count, assess_all, repeat=3)

    store_count = min(count, 50_000)
    store_parts = list(zip(parts, pairs, strict=True))[: store_count // SLICE]
    assessed = [assess_slice(pair, project_many(part), {}, NOW.date(), NOW)[0] for part, pair in store_parts]
    summaries = [
        assess_slice(pair, project_many(part), {}, NOW.date(), NOW, keep_schedule=False)[0]
        for part, pair in store_parts
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for label, key, rows in (
            ("store to SQLite, with the schedule", "store_sqlite_with_schedule_per_s", assessed),
            ("store to SQLite, summary only", "store_sqlite_summary_per_s", summaries),
        ):
            engine = create_store_engine(f"sqlite:///{tmp}/{key}.db")
            upgrade(engine)

            def write(rows: list[list[object]] = rows, engine: object = engine) -> None:
                for part in rows:
                    with engine.begin() as conn:  # type: ignore[attr-defined]
                        write_assessments(conn, part)  # type: ignore[arg-type]

            figures[key] = timed(label, store_count, write)
            engine.dispose()

    with CashflowServer() as server, HttpCashflowClient(server.url, timeout=30, batch_size=SLICE) as client:
        http_parts = slices(loans[:http_count])
        client.project_many(http_parts[0])
        figures["http_service_per_s"] = timed(
            "through the HTTP service (loopback)",
            http_count,
            lambda: [client.project_many(p) for p in http_parts],
        )

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratio = figures["project_many_per_s"] / figures["floor_npf_vectorised_per_s"]
    print(f"project_many is {ratio:.2f}x the vectorised floats floor; peak RSS {rss_mb:.0f} MB")
    results = {
        "loans": count,
        "periods": periods,
        "slice": SLICE,
        "quick": args.quick,
        **{k: round(v, 1) for k, v in figures.items()},
        "project_vs_floor": round(ratio, 3),
        "peak_rss_mb": round(rss_mb, 1),
    }
    out = Path(__file__).with_name("results") / "assessment.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
