"""Ledger throughput: batched transfers per second on SQLite and PostgreSQL, beside a bare executemany.

For each backend, in the same run and on the same schema:

* ``floor``: the same transfer rows inserted with the driver's bare ``executemany``, one transaction per batch
  (no validation, no balances, no idempotency lookups): what the database itself costs;
* ``ledger``: :class:`tranche.ledger.adapters.SqlLedger` applying them in batches (lock accounts, look up
  ids, validate in memory, write transfers, update balances, balancing check);
* ``one per commit``: the ledger with batches of one transfer, to show what batching buys.

    python bench/ledger.py [--quick] [--no-postgres]

Figures are printed and written to ``bench/results/ledger.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tranche.ledger import chart
from tranche.ledger.adapters import SqlLedger
from tranche.ledger.domain import Transfer
from tranche.shared.clock import SystemClock
from tranche.store.engine import create_store_engine
from tranche.store.migrate import upgrade

RESULTS = Path(__file__).with_name("results")
TARGET_EMBEDDED = 50_000
BATCH = 50_000  # transfers per database transaction, for the ledger and the floor alike


def workload(transfers: int, investors: int, seed: int = 7) -> list[Transfer]:
    """Deposits, then investor-to-investor moves (some refused as overdrafts): every transfer is checked."""
    rng = random.Random(seed)
    world = chart.world("EUR").id
    cash = [chart.investor_cash(f"i{n}", "EUR").id for n in range(investors)]
    out: list[Transfer] = []
    for n in range(transfers):
        if n < investors or rng.random() < 0.3:
            out.append(
                Transfer(f"t{n}", world, cash[n % investors], rng.randint(1_000, 100_000), "EUR", "deposit")
            )
        else:
            a, b = rng.sample(range(investors), 2)
            out.append(Transfer(f"t{n}", cash[a], cash[b], rng.randint(1, 20_000), "EUR", "move"))
    return out


def prepare(url: str, investors: int) -> tuple[Engine, SqlLedger]:
    engine = create_store_engine(url)
    upgrade(engine)
    ledger = SqlLedger(engine, SystemClock(), batch_size=BATCH)
    ledger.open_accounts(
        [chart.world("EUR"), *(chart.investor_cash(f"i{n}", "EUR") for n in range(investors))]
    )
    return engine, ledger


def floor(engine: Engine, transfers: list[Transfer], batch: int) -> float:
    """Bare executemany of the same rows (valid ones only, as the ledger would write them)."""
    sqlite = engine.dialect.name == "sqlite"
    p = "?" if sqlite else "%s"
    sql = (
        "INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, currency, code, ref, phase, "
        f"pending_id, timeout_us, created_at, expires_at) VALUES ({', '.join([p] * 12)})"
    )
    rows = [
        (
            "f" + t.id,
            t.debit_account_id,
            t.credit_account_id,
            t.amount,
            "EUR",
            t.code,
            "",
            "single",
            None,
            0,
            0,
            0,
        )
        for t in transfers
    ]
    raw = engine.raw_connection()
    try:
        driver: Any = raw.driver_connection
        started = time.perf_counter()
        for start in range(0, len(rows), batch):
            cursor = driver.cursor()
            if sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany(sql, rows[start : start + batch])
            driver.commit()
            cursor.close()
        return len(rows) / (time.perf_counter() - started)
    finally:
        raw.close()


def timed(action: Callable[[], Any], count: int) -> float:
    started = time.perf_counter()
    action()
    return count / (time.perf_counter() - started)


def run_backend(name: str, url: str, transfers: int, investors: int, singles: int) -> dict[str, Any]:
    work = workload(transfers, investors)
    engine, ledger = prepare(url, investors)
    try:
        results: list[Any] = []
        ledger_rate = timed(lambda: results.extend(ledger.submit(work)), len(work))
        refused = sum(1 for r in results if not r.ok)
        replay_rate = timed(lambda: ledger.submit(work), len(work))
        single = SqlLedger(engine, SystemClock(), batch_size=1)
        extra = [
            Transfer(
                f"s{n}", chart.world("EUR").id, chart.investor_cash(f"i{n % investors}", "EUR").id, 1, "EUR"
            )
            for n in range(singles)
        ]
        single_rate = timed(lambda: single.submit(extra), singles)
        floor_rate = floor(engine, work, BATCH)
        net = ledger.net_by_currency()
        assert net == {"EUR": (0, 0)}, net
    finally:
        engine.dispose()
    figures = {
        "backend": name,
        "transfers": len(work),
        "accounts": investors + 1,
        "batch": BATCH,
        "refused_overdrafts": refused,
        "ledger_transfers_per_s": round(ledger_rate),
        "replay_transfers_per_s": round(replay_rate),
        "one_per_commit_transfers_per_s": round(single_rate),
        "floor_executemany_rows_per_s": round(floor_rate),
        "ledger_vs_floor": round(ledger_rate / floor_rate, 2),
    }
    print(
        f"{name:10} ledger {ledger_rate:>9,.0f}/s   floor executemany {floor_rate:>9,.0f}/s   "
        f"({ledger_rate / floor_rate:.0%} of floor)   replay {replay_rate:>9,.0f}/s   "
        f"one per commit {single_rate:>7,.0f}/s   [{len(work):,} transfers in batches of {BATCH:,} over "
        f"{investors + 1:,} accounts, {refused:,} refused]"
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    transfers, investors, singles = (30_000, 2_000, 300) if args.quick else (300_000, 20_000, 2_000)
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "quick": args.quick,
        "target_embedded_per_s": TARGET_EMBEDDED,
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="tranche-bench-ledger-") as tmp:
        report["runs"].append(
            run_backend("sqlite", f"sqlite:///{tmp}/ledger.db", transfers, investors, singles)
        )
    if not args.no_postgres:
        from tranche.testing.postgres import PostgresServer, ServerUnavailable

        try:
            with PostgresServer() as server:
                url = server.create_database("bench_ledger")
                report["runs"].append(run_backend("postgresql", url, transfers, investors, singles))
        except ServerUnavailable as exc:
            print(f"postgresql skipped: {exc}")
    sqlite_rate = report["runs"][0]["ledger_transfers_per_s"]
    verdict = "meets" if sqlite_rate >= TARGET_EMBEDDED else "misses"
    print(f"embedded target {TARGET_EMBEDDED:,}/s: {verdict} ({sqlite_rate:,}/s)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ledger.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
