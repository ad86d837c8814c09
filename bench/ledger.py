"""Ledger throughput: batched transfers per second on SQLite and PostgreSQL, beside a bare bulk insert.

For each backend, in the same run and on the same schema:

* ``floor``: the same transfer rows inserted with the driver's bare bulk insert, one transaction per batch (no
  validation, no balances, no idempotency lookups): what the database itself costs. On SQLite that is
  ``executemany``; on PostgreSQL psycopg 3's binary ``COPY``, the fastest way in;
* ``ledger``: :class:`tranche.ledger.SqlLedgerStore` applying them in batches (lock accounts, look up ids,
  validate in memory, write transfers, update balances, balancing check), every batch synced to disk at commit;
* ``replay``: the same batches again (every transfer already there: ``exists``);
* ``one per commit``: the ledger with batches of one transfer, as the API's deposits are, durable (SQLite
  ``synchronous=FULL``) and, to show what durability costs, with the store's usual ``synchronous=NORMAL``;
  then durable again from 8 threads at once, as concurrent requests arrive: the store commits the flows that
  arrive together as one group, with one sync.

PostgreSQL runs with ``fsync``, ``full_page_writes`` and ``synchronous_commit`` on, as in production (the test
server turns them off for speed).

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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tranche.ledger import Account, SqlLedgerStore, Transfer, TransferResult, chart
from tranche.shared.clock import SystemClock
from tranche.store.engine import create_store_engine
from tranche.store.migrate import upgrade

RESULTS = Path(__file__).with_name("results")
TARGET = 50_000  # transfers/s, on SQLite and on PostgreSQL
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


def accounts(investors: int) -> list[Account]:
    return [chart.world("EUR"), *(chart.investor_cash(f"i{n}", "EUR") for n in range(investors))]


def batches(transfers: Sequence[Transfer], size: int) -> Iterator[Sequence[Transfer]]:
    start = 0
    while start < len(transfers):
        stop = min(start + size, len(transfers))
        while stop < len(transfers) and transfers[stop - 1].linked:
            stop += 1  # a linked chain stays in one batch
        yield transfers[start:stop]
        start = stop


def submit(store: SqlLedgerStore, transfers: Sequence[Transfer], size: int) -> list[TransferResult]:
    results: list[TransferResult] = []
    for batch in batches(transfers, size):
        results += store.atomic_batch(lambda tx, batch=batch: tx.apply(batch).results, len(batch))
    return results


class NotDurable(SqlLedgerStore):
    """The same store without the sync at commit (SQLite NORMAL, PostgreSQL synchronous_commit off): what
    durability costs."""

    durable = False


def prepare(url: str, investors: int) -> tuple[Engine, SqlLedgerStore]:
    engine = create_store_engine(url)
    upgrade(engine)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for setting in ("fsync", "full_page_writes", "synchronous_commit"):
                conn.exec_driver_sql(f"ALTER SYSTEM SET {setting} = on")
            conn.exec_driver_sql("SELECT pg_reload_conf()")
        engine.dispose()
    store = SqlLedgerStore(engine, SystemClock())
    # Every account opened before the clock starts, by a first cent each.
    opened = accounts(investors)
    seeds = [Transfer(f"seed{n}", opened[0].id, a.id, 1, "EUR") for n, a in enumerate(opened[1:])]
    store.atomic_batch(lambda tx: tx.apply(seeds, opened), len(seeds))
    return engine, store


def floor(engine: Engine, transfers: list[Transfer], batch: int) -> float:
    """Bare bulk insert of the same rows (valid ones only, as the ledger would write them)."""
    sqlite = engine.dialect.name == "sqlite"
    columns = (
        "id, debit_account_id, credit_account_id, amount, currency, code, ref, phase, pending_id, timeout_us, "
        "created_at, expires_at"
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
                cursor.executemany(
                    f"INSERT INTO ledger_transfers ({columns}) VALUES ({', '.join('?' * 12)})",
                    rows[start : start + batch],
                )
            else:
                with cursor.copy(f"COPY ledger_transfers ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["text"] * 3 + ["int8"] + ["text"] * 5 + ["int8"] * 3)
                    for row in rows[start : start + batch]:
                        copy.write_row(row)
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
    engine, store = prepare(url, investors)
    try:
        results: list[TransferResult] = []
        ledger_rate = timed(lambda: results.extend(submit(store, work, BATCH)), len(work))
        refused = sum(1 for r in results if not r.ok)
        replay_rate = timed(lambda: submit(store, work, BATCH), len(work))
        world, cash = (
            chart.world("EUR").id,
            [chart.investor_cash(f"i{n}", "EUR").id for n in range(investors)],
        )
        durable = [Transfer(f"s{n}", world, cash[n % investors], 1, "EUR") for n in range(singles)]
        single_rate = timed(lambda: submit(store, durable, 1), singles)
        relaxed = [Transfer(f"r{n}", world, cash[n % investors], 1, "EUR") for n in range(singles)]
        relaxed_rate = timed(lambda: submit(NotDurable(engine, SystemClock()), relaxed, 1), singles)
        grouped = [Transfer(f"g{n}", world, cash[n % investors], 1, "EUR") for n in range(singles * 4)]
        with ThreadPoolExecutor(8) as pool:
            grouped_rate = timed(
                lambda: list(pool.map(lambda t: submit(store, [t], 1), grouped)), len(grouped)
            )
        floor_rate = floor(engine, work, BATCH)
        net = store.net_by_currency()
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
        "one_per_commit_durable_per_s": round(single_rate),
        "one_per_commit_not_durable_per_s": round(relaxed_rate),
        "one_per_commit_8_threads_durable_per_s": round(grouped_rate),
        "floor": "executemany" if name == "sqlite" else "binary COPY",
        "floor_rows_per_s": round(floor_rate),
        "ledger_vs_floor": round(ledger_rate / floor_rate, 2),
    }
    print(
        f"{name:10} ledger {ledger_rate:>9,.0f}/s   floor ({figures['floor']}) {floor_rate:>9,.0f}/s   "
        f"({ledger_rate / floor_rate:.0%} of floor)   replay {replay_rate:>9,.0f}/s   "
        f"one per commit {single_rate:>7,.0f}/s durable, {relaxed_rate:>7,.0f}/s not, "
        f"{grouped_rate:>7,.0f}/s durable from 8 threads   "
        f"[{len(work):,} transfers in batches of {BATCH:,} over {investors + 1:,} accounts, {refused:,} refused]"
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
        "target_per_s": TARGET,
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
    for run in report["runs"]:
        rate = run["ledger_transfers_per_s"]
        print(f"{run['backend']} target {TARGET:,}/s: {'meets' if rate >= TARGET else 'misses'} ({rate:,}/s)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ledger.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
