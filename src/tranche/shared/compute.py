"""Running CPU-heavy pure functions on every core: on the calling thread, or in a pool of processes.

Decoding tapes and projecting cash flows is pure Python arithmetic, so threads cannot share it out (they take
turns holding the interpreter). A :class:`ProcessCompute` runs such functions in worker processes while the
calling process looks up and writes. What crosses the process boundary must pickle: a module-level function,
and plain arguments and results (tuples, not ORM rows or connections).

    compute = ProcessCompute(2)
    scanned = compute.run(scan_documents, piece)
    for entries in compute.map(key_entries, ((piece,) for piece in pieces), window=8): ...
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Protocol, TypeVar

__all__ = ["Compute", "InlineCompute", "ProcessCompute", "make_compute"]

T = TypeVar("T")


class Compute(Protocol):
    def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        """``fn(*args)``, wherever this runs it; blocks until it is done and raises what it raised."""
        ...

    def map(self, fn: Callable[..., T], calls: Iterable[tuple[Any, ...]], /, window: int) -> Iterator[T]:
        """``fn(*args)`` for each ``args`` of ``calls``, in their order. At most ``window`` calls are taken
        from ``calls`` ahead of the result being waited for, so a long iterable is never held at once."""
        ...

    def start(self, *modules: str) -> None:
        """Get ready ahead of the first call, with ``modules`` imported where the calls will run."""
        ...

    def close(self) -> None: ...


class InlineCompute:
    """Runs on the calling thread."""

    def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        return fn(*args)

    def map(self, fn: Callable[..., T], calls: Iterable[tuple[Any, ...]], /, window: int) -> Iterator[T]:
        return (fn(*args) for args in calls)

    def start(self, *modules: str) -> None:
        for name in modules:
            importlib.import_module(name)

    def close(self) -> None:
        return None


def _prepare_worker(parent: int, modules: tuple[str, ...]) -> None:
    """Runs in each worker as it starts: import ``modules``, and end the worker when the process that
    started it is gone (even killed with SIGKILL), instead of leaving it idle for ever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    for name in modules:
        importlib.import_module(name)


def _ready() -> None:
    return None


class ProcessCompute:
    """Runs in a pool of ``processes`` worker processes, started on first use; thread-safe."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        return self._started().submit(fn, *args).result()

    def map(self, fn: Callable[..., T], calls: Iterable[tuple[Any, ...]], /, window: int) -> Iterator[T]:
        pool = self._started()
        pending: deque[Future[T]] = deque()
        try:
            for args in calls:
                pending.append(pool.submit(fn, *args))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # the caller stopped early, or a call failed
                future.cancel()

    def start(self, *modules: str) -> None:
        """Start the workers now (the pool otherwise starts one a call, on first use). Every worker the pool
        starts, now or later, imports ``modules`` first, when the pool was not started before."""
        pool = self._started(modules)
        # Each call submitted while no worker is idle starts one more, up to ``processes``.
        for future in [pool.submit(_ready) for _ in range(self.processes)]:
            future.result()

    def _started(self, modules: tuple[str, ...] = ()) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn: the workers start clean, without this process's threads, connections and imports.
                self._pool = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_prepare_worker,
                    initargs=(os.getpid(), modules),
                )
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None


def make_compute(processes: int) -> Compute:
    """A pool of ``processes`` workers, or the calling thread if ``processes`` is 0."""
    return ProcessCompute(processes) if processes > 0 else InlineCompute()
