"""Running CPU-heavy pure functions on every core: on the calling thread, or in a pool of processes.

Decoding tapes and projecting cash flows is pure Python arithmetic, so threads cannot share it out (they take
turns holding the interpreter). A :class:`ProcessCompute` runs such functions in worker processes while the
calling process looks up and writes. What crosses the process boundary must pickle: a module-level function,
and plain arguments and results (tuples, not ORM rows or connections).

    compute = ProcessCompute(2)
    scanned = compute.run(scan_documents, piece)
    for entries in compute.map(key_entries, ((piece,) for piece in pieces), window=8): ...

``TRANCHE_PARSE_PROCESSES`` is a budget of the host, not of a process: the tranche processes of one machine
(two pipeline workers, say) share it through :class:`HostSlots`, lock files in ``TRANCHE_RUN_DIR``. A call
runs in a pool's process only while it holds one of the budget's slots, so at most that many calls compute
at once on the host however many pools there are; each pool starts its processes as its calls first need
them, up to the budget. A slot is an exclusive ``flock`` on a file, which the kernel frees when its holder
dies, even by SIGKILL. Containers on one host share the budget by mounting the same ``TRANCHE_RUN_DIR``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

__all__ = ["Compute", "HostSlots", "InlineCompute", "ProcessCompute", "make_compute"]

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


class HostSlots:
    """``count`` slots shared by every process of the host that uses the same ``directory``: files
    ``slot-<n>.lock``, each held with an exclusive ``flock`` by at most one call at a time."""

    def __init__(self, directory: Path, count: int, *, poll: float = 0.002) -> None:
        self.directory = Path(directory)
        self.count = count
        self.poll = poll

    def _open(self, n: int) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        return os.open(self.directory / f"slot-{n}.lock", os.O_RDWR | os.O_CREAT, 0o666)

    def acquire(self) -> int:
        """Wait for a free slot and hold it; returns the handle to :meth:`release`."""
        pause = self.poll
        while True:
            for n in range(self.count):
                fd = self._open(n)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                return fd
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def release(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class ProcessCompute:
    """Runs in a pool of ``processes`` worker processes, started on first use; thread-safe. With ``slots``
    (the host's budget), a call waits for a slot before it goes to the pool."""

    def __init__(self, processes: int, *, slots: HostSlots | None = None) -> None:
        self.processes = processes
        self.slots = slots
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _submit(self, pool: ProcessPoolExecutor, fn: Callable[..., T], args: tuple[Any, ...]) -> Future[T]:
        if self.slots is None:
            return pool.submit(fn, *args)
        slots = self.slots
        slot = slots.acquire()
        try:
            future = pool.submit(fn, *args)
        except BaseException:
            slots.release(slot)
            raise
        future.add_done_callback(lambda _done: slots.release(slot))
        return future

    def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        return self._submit(self._started(), fn, args).result()

    def map(self, fn: Callable[..., T], calls: Iterable[tuple[Any, ...]], /, window: int) -> Iterator[T]:
        pool = self._started()
        pending: deque[Future[T]] = deque()
        try:
            for args in calls:
                pending.append(self._submit(pool, fn, args))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # the caller stopped early, or a call failed
                future.cancel()

    def start(self, *modules: str) -> None:
        """Start the workers now (the pool otherwise starts one a call, on first use). Every worker the pool
        starts, now or later, imports ``modules`` first, when the pool was not started before. With a host
        budget, one worker is started now and the others as calls need them, so that processes started on one
        host stay near the budget."""
        pool = self._started(modules)
        if self.slots is not None:
            pool.submit(_ready).result()
            return
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


def make_compute(processes: int, *, run_dir: Path | None = None) -> Compute:
    """A pool of ``processes`` workers, or the calling thread if ``processes`` is 0. With ``run_dir``,
    ``processes`` is the budget of the host, shared with the other processes using that directory."""
    if processes <= 0:
        return InlineCompute()
    slots = HostSlots(run_dir / "parse-slots", processes) if run_dir is not None else None
    return ProcessCompute(processes, slots=slots)
