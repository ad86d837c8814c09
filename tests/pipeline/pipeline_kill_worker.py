"""A worker process for the kill test: runs the toy pipeline until it is killed.

python pipeline_kill_worker.py DATABASE_URL OWNER [LEASE_SECONDS [NAME]]

Prints "started" once the runner has registered (and taken back whatever a dead predecessor held).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from pipeline_toys import recorder

from tranche.pipeline import Item, Pipeline, PipelineRunner, Stage
from tranche.shared.clock import SystemClock
from tranche.store.engine import create_store_engine

LEASE_SECONDS = 1.0


def slow(item: Item) -> None:
    # Long enough that a kill usually lands while an item is leased and its work is running.
    time.sleep(0.05)


def kill_pipeline(lease_seconds: float = LEASE_SECONDS) -> Pipeline:
    return Pipeline(
        "toy",
        [
            # The read stage holds the longest lease, as intake's does (300 s there).
            Stage(
                "toy.read", recorder("toy.diff"), work=slow, lease_seconds=lease_seconds * 2.5, claim_batch=4
            ),
            Stage(
                "toy.diff",
                recorder("toy.assess"),
                work=slow,
                lease_seconds=lease_seconds,
                ordered=True,
                claim_batch=2,
            ),
            Stage(
                "toy.assess",
                recorder(None),
                work=slow,
                lease_seconds=lease_seconds,
                concurrency=2,
                claim_batch=2,
            ),
        ],
    )


def main() -> None:
    url, owner = sys.argv[1], sys.argv[2]
    lease_seconds = float(sys.argv[3]) if len(sys.argv) > 3 else LEASE_SECONDS
    name = sys.argv[4] if len(sys.argv) > 4 else None
    runner = PipelineRunner(
        create_store_engine(url), [kill_pipeline(lease_seconds)], clock=SystemClock(), owner=owner, name=name
    )
    runner.start()
    print("started", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
