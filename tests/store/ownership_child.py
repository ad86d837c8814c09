"""A process that claims one job and reports what happens to it on stdout, one line per change:
``owner <epoch>``, ``lost <epoch>``. Run as ``python ownership_child.py URL JOB TTL HEARTBEAT``."""

from __future__ import annotations

import logging
import sys
import threading

from tranche.store.engine import create_store_engine
from tranche.store.ownership import Ownership, Tenure


def main(url: str, job: str, ttl: float, heartbeat: float) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    ownership = Ownership(create_store_engine(url), ttl=ttl, heartbeat=heartbeat)
    printing = threading.Lock()  # two threads print: one line must not run into the other

    def line(text: str) -> None:
        with printing:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def say(what: str) -> object:
        def report(tenure: Tenure) -> None:
            line(f"{what} {tenure.epoch}")

        return report

    ownership.claim(job, on_acquired=say("owner"), on_lost=say("lost"))
    ownership.start()
    line(f"started {ownership.owner}")
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
