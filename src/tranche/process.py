"""Tuning of a process that runs the pipeline's worker threads; called where such a process starts
(``tranche serve``, ``tranche worker``, the demo, the intake benchmark), never by library code."""

from __future__ import annotations

import gc
import sys

from tranche.shared.malloc import limit_arenas

_SWITCH_INTERVAL = 0.001  # seconds a thread runs before another may take the interpreter lock


def tune_for_workers() -> None:
    """Set the process up for the worker threads, before they start."""
    limit_arenas(2)  # before the worker threads start, so that they share the allocator's arenas
    # What starting made (modules, tables, the app) lives as long as the process: the collector need not walk
    # it again in each full collection while tapes stream through.
    gc.freeze()
    # A slice passes between threads several times (to the compute pool and back, to the store); a thread that
    # waits for the interpreter lock waits up to this interval each time (5 ms by default).
    sys.setswitchinterval(_SWITCH_INTERVAL)
