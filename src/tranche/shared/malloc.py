"""Keeping the heap of a process with many threads small, under glibc's allocator."""

from __future__ import annotations

import ctypes
import sys

_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def limit_arenas(count: int) -> bool:
    """Let glibc's allocator use at most ``count`` arenas. By default each new thread may get an arena of its
    own (up to eight per core), and every arena keeps the memory freed in it; threads that mostly wait on the
    store and on a pool of processes do not need them. True if the allocator took the limit (False on other
    C libraries and systems)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, count))
