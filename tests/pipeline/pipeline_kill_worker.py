"""A worker process for the kill test: runs the toy pipeline until it is killed.

python pipeline_kill_worker.py DATABASE_URL OWNER
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


def kill_pipeline() -> Pipeline:
    return Pipeline(
        "toy",
        [
            Stage("toy.read", recorder("toy.diff"), lease_seconds=LEASE_SECONDS, claim_batch=4),
            Stage(
                "toy.diff",
                recorder("toy.assess"),
                work=slow,
                lease_seconds=LEASE_SECONDS,
                ordered=True,
                claim_batch=2,
            ),
            Stage(
                "toy.assess",
                recorder(None),
                work=slow,
                lease_seconds=LEASE_SECONDS,
                concurrency=2,
                claim_batch=2,
            ),
        ],
    )


def main() -> None:
    url, owner = sys.argv[1], sys.argv[2]
    runner = PipelineRunner(create_store_engine(url), [kill_pipeline()], clock=SystemClock(), owner=owner)
    runner.start()
    print("started", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
