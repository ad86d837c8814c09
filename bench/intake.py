"""Intake throughput and memory, end to end, on the embedded default (SQLite, in-process bus).

For each size it measures, each in a fresh child process so that peak RSS is the child's own:

- floor: streaming ``bson.decode_file_iter`` of the same tape plus a bare ``executemany`` of the same rows
  (the columns tranche stores) into SQLite, 1000 rows a transaction;
- tranche, all new: the tape is archived (as an upload is) and goes through the intake pipeline to stored and
  assessed loan versions (read, then diff, which assesses what it stores with the built-in projection), in a
  process started on a store whose schema is already made (as `tranche migrate` makes it when tranche is
  deployed);
- tranche, unchanged: the same loans uploaded again (in another order, so that the bytes differ and it is a
  new batch) against the state the first tape left.

    python bench/intake.py                 # 100k and 1M loans
    python bench/intake.py --quick         # 20k and 100k loans
    python bench/intake.py --sizes 250000  # any sizes
    python bench/intake.py --intake-only   # read and diff alone, without assessing
    python bench/intake.py --repeat 3      # each size three times: the median, and the spread

Targets (issue 2, for read and diff; issue 3, with assessment): all new ≥ 30,000 loans/s; unchanged ≥ 100,000
loans/s; peak RSS ≤ 100 MB; peak RSS at the largest size ≤ 1.2 × peak RSS at the smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results")
DAY = date(2026, 11, 23)


def make_tapes(n: int, workdir: Path) -> tuple[Path, Path]:
    from tranche.intake.tape import RawDocument, TapeFormat, iter_documents
    from tranche.intake.tapegen import first_tape, write_tape

    tape = workdir / f"tape-{n}.bson"
    again = workdir / f"tape-{n}-reordered.bson"
    write_tape(first_tape(n, "bench", 7, DAY), tape)
    # The same loans, second half first: every loan unchanged, but other bytes (a new batch).
    half = tape.stat().st_size // 2
    with tape.open("rb") as source, again.open("wb") as out:
        split = None
        for doc in iter_documents(source, TapeFormat.BSON):
            assert isinstance(doc, RawDocument)
            if doc.offset >= half:
                split = doc.offset
                break
        assert split is not None
        source.seek(split)
        shutil.copyfileobj(source, out, 1 << 20)
        source.seek(0)
        left = split
        while left:
            chunk = source.read(min(left, 1 << 20))
            out.write(chunk)
            left -= len(chunk)
    return tape, again


# -- children -------------------------------------------------------------------------------------------


def child_floor(tape: Path, db: Path) -> dict[str, Any]:
    import sqlite3

    import bson
    from bson.codec_options import CodecOptions

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE loans (lender_id TEXT, loan_id TEXT, version INT, batch_id TEXT, batch_sequence INT, run INT,"
        " document INT, recorded_at TEXT, status TEXT, currency TEXT, principal INT, outstanding_principal INT,"
        " interest_rate TEXT, term_months INT, schedule_type TEXT, issue_date TEXT, next_payment_date TEXT,"
        " all_or_nothing INT, borrower_country TEXT, borrower_age INT, borrower_income_monthly INT,"
        " borrower_credit_score INT, raw_hash BLOB, content_hash BLOB, format TEXT, body BLOB,"
        " PRIMARY KEY (lender_id, loan_id, version))"
    )
    insert = "INSERT INTO loans VALUES (" + ",".join("?" * 26) + ")"
    started = time.perf_counter()
    rows = []
    count = 0
    hash16 = b"\0" * 16
    with tape.open("rb") as file:
        for i, d in enumerate(bson.decode_file_iter(file, CodecOptions())):
            b = d["borrower"]
            rows.append(
                (
                    "bench",
                    d["loan_id"],
                    1,
                    "b",
                    1,
                    1,
                    i,
                    "2026-11-23",
                    d["status"],
                    d["currency"],
                    0,
                    0,
                    str(d["interest_rate"]),
                    d["term_months"],
                    d["schedule_type"],
                    str(d["issue_date"]),
                    str(d["next_payment_date"]),
                    d["all_or_nothing"],
                    b["country"],
                    b["age"],
                    0,
                    b["credit_score"],
                    hash16,
                    hash16,
                    "bson",
                    b"",
                )
            )
            if len(rows) == 1000:
                conn.execute("BEGIN")
                conn.executemany(insert, rows)
                conn.execute("COMMIT")
                count += len(rows)
                rows.clear()
    if rows:
        conn.execute("BEGIN")
        conn.executemany(insert, rows)
        conn.execute("COMMIT")
        count += len(rows)
    elapsed = time.perf_counter() - started
    return {"loans": count, "seconds": elapsed}


def child_schema(db: Path) -> dict[str, Any]:
    from tranche.store.engine import create_store_engine
    from tranche.store.migrate import upgrade

    engine = create_store_engine(f"sqlite:///{db}")
    upgrade(engine)
    engine.dispose()
    return {}


def child_tranche(tapes: list[Path], db: Path, archive: Path, intake_only: bool) -> dict[str, Any]:
    from dataclasses import replace

    from tranche.bootstrap import bootstrap
    from tranche.config import Settings
    from tranche.crm.lenders import register_lender
    from tranche.intake.tape import TapeFormat
    from tranche.process import tune_for_workers

    settings = replace(
        Settings.from_env(), database_url=f"sqlite:///{db}", archive_dir=archive, log_level="WARNING"
    )
    container = bootstrap(settings)
    with container.engine.begin() as conn:
        register_lender(conn, "bench", "Bench", at=container.clock.now())
    if intake_only:
        # Diffed slices finish instead of being assessed.
        container.intake_stages.next_stage = None
        container.intake_stages.assessment = None
    tune_for_workers()
    container.start_workers()  # as `tranche serve` runs them
    runs = []
    for tape in tapes:
        started = time.time()
        with tape.open("rb") as file:
            receipt = container.intake.receive(
                "bench", TapeFormat.BSON, iter(lambda f=file: f.read(1 << 20), b"")
            )
        container.wake_workers()
        # Polled as a client would; the batch itself records when its last slice was done.
        while (status := container.intake.batch_status(receipt.batch_id))["status"] != "completed":
            time.sleep(0.2)
        elapsed = status["completed_at"].timestamp() - started
        runs.append({"loans": status["counts"]["read"], "seconds": elapsed, "counts": status["counts"]})
    container.close()
    import resource

    # Parsing processes are this child's children; they were reaped when the container closed.
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"runs": runs, "children_peak_rss_mb": children}


def run_child(*args: str) -> tuple[dict[str, Any], float]:
    """Run this script as a child; its JSON answer and the peak RSS in MB of the largest process it ran
    (itself or one of its parsing processes)."""
    process = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE)
    assert process.stdout is not None
    output = process.stdout.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"child {args[0]} failed with status {status}")
    answer = json.loads(output)
    return answer, max(usage.ru_maxrss / 1024, answer.get("children_peak_rss_mb", 0.0))


def make_tapes_in_child(n: int, workdir: Path) -> tuple[Path, Path]:
    # Made in a child so that this process stays small: a child's peak RSS counts what it inherits at fork.
    paths, _rss = run_child("tapes", str(n), str(workdir))
    return Path(paths["tape"]), Path(paths["again"])


def measure(n: int, tapes: tuple[Path, Path], workdir: Path, intake_only: bool) -> dict[str, Any]:
    """One measurement of a size, in ``workdir`` (a directory of its own)."""
    tape, again = tapes
    workdir.mkdir()
    # Each timed child starts with nothing left to write back from the one before (the tapes, the floor's
    # database), so that it is not charged for another's disk writes.
    os.sync()
    floor, floor_rss = run_child("floor", str(tape), str(workdir / "floor.db"))
    # The schema is made first, by a process of its own, as `tranche migrate` does when tranche is deployed.
    run_child("schema", str(workdir / "tranche.db"))
    os.sync()
    tranche, rss = run_child(
        "tranche",
        "1" if intake_only else "0",
        str(workdir / "tranche.db"),
        str(workdir / "archive"),
        str(tape),
        str(again),
    )
    new, unchanged = tranche["runs"]
    assert new["counts"]["new"] == n and unchanged["counts"]["unchanged"] == n
    shutil.rmtree(workdir)
    return {
        "loans": n,
        "floor_loans_per_s": round(floor["loans"] / floor["seconds"]),
        "floor_peak_rss_mb": round(floor_rss, 1),
        "new_loans_per_s": round(n / new["seconds"]),
        "unchanged_loans_per_s": round(n / unchanged["seconds"]),
        "peak_rss_mb": round(rss, 1),
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the runs of one size (the peak RSS: the largest), with every run kept."""
    figures = {key: statistics.median(run[key] for run in runs) for key in runs[0] if key != "loans"}
    figures["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
    result = {
        "loans": runs[0]["loans"],
        **{k: round(v, 1) if k.endswith("_mb") else round(v) for k, v in figures.items()},
    }
    if len(runs) > 1:
        result["runs"] = runs
    return result


def _range(runs: list[dict[str, Any]], key: str) -> str:
    return f"{min(run[key] for run in runs):,}–{max(run[key] for run in runs):,}"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "tapes":
        tape, again = make_tapes(int(sys.argv[2]), Path(sys.argv[3]))
        print(json.dumps({"tape": str(tape), "again": str(again)}))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "floor":
        print(json.dumps(child_floor(Path(sys.argv[2]), Path(sys.argv[3]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "schema":
        print(json.dumps(child_schema(Path(sys.argv[2]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "tranche":
        tapes = [Path(p) for p in sys.argv[5:]]
        print(json.dumps(child_tranche(tapes, Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[2] == "1")))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k and 100k loans")
    parser.add_argument("--sizes", type=int, nargs="*", help="tape sizes in loans")
    parser.add_argument("--intake-only", action="store_true", help="read and diff alone, without assessment")
    parser.add_argument(
        "--repeat", type=int, default=1, help="measure each size this many times and report the median"
    )
    args = parser.parse_args()
    sizes = args.sizes or ([20_000, 100_000] if args.quick else [100_000, 1_000_000])
    results = []
    with tempfile.TemporaryDirectory(prefix="tranche-bench-") as tmp:
        for n in sizes:
            tapes = make_tapes_in_child(n, Path(tmp))
            runs = [measure(n, tapes, Path(tmp) / f"{n}-{i}", args.intake_only) for i in range(args.repeat)]
            for path in tapes:
                path.unlink()
            result = median_of(runs)
            results.append(result)
            spread = (
                ""
                if len(runs) == 1
                else f"  (median of {len(runs)}; new {_range(runs, 'new_loans_per_s')}, unchanged {_range(runs, 'unchanged_loans_per_s')})"
            )
            print(
                f"{n:>9,} loans  floor {result['floor_loans_per_s']:>8,}/s  "
                f"tranche new {result['new_loans_per_s']:>8,}/s (target 30,000)  "
                f"unchanged {result['unchanged_loans_per_s']:>8,}/s (target 100,000)  "
                f"peak RSS {result['peak_rss_mb']:.0f} MB (target 100; floor {result['floor_peak_rss_mb']:.0f})"
                f"{spread}",
                flush=True,
            )
    summary: dict[str, Any] = {
        "stages": "read, diff" if args.intake_only else "read, diff with assessment",
        "sizes": results,
    }
    if len(results) > 1:
        ratio = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
        summary["rss_ratio_largest_to_smallest"] = round(ratio, 3)
        print(f"peak RSS at {sizes[-1]:,} / at {sizes[0]:,}: {ratio:.2f} (target ≤ 1.2)")
    RESULTS.mkdir(exist_ok=True)
    name = "intake-only.json" if args.intake_only else "intake.json"
    (RESULTS / name).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
