"""The process's Prometheus metrics, and the hooks every context registers into.

Each process has one :class:`Metrics` (``container.metrics``), served at ``/metrics`` by the API and by the
ops port of a worker (``TRANCHE_OPS_PORT``). A context adds what it knows in one of two ways:

- instruments it updates as work happens (Prometheus computes rates from counters)::

      batches = container.metrics.counter("tranche_ledger_batches", "transfer batches posted")
      transfers = container.metrics.counter("tranche_ledger_transfers", "transfers posted")
      ...
      batches.inc(); transfers.inc(len(batch))

- probes read at each scrape, for what is cheaper to look at than to track (a depth, a size, a lag); a probe
  returns a number, or a mapping from label values to numbers, and may be a coroutine function::

      container.metrics.probe(
          "tranche_matcher_book_offers", "sell offers resting in the book", lambda: book.offer_count()
      )
      container.metrics.probe(
          "tranche_stage_depth", "items waiting per stage", depths, labels=("pipeline", "stage")
      )

Metric names start with ``tranche_``; a probe that fails (its store is away) is left out of that scrape and
logged at DEBUG, so that the other metrics still reach the scraper.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "Metrics", "ProbeValue"]

log = logging.getLogger("tranche.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

ProbeValue = float | int | Mapping[tuple[str, ...], float | int]
Probe = Callable[[], ProbeValue] | Callable[[], Awaitable[ProbeValue]]


@dataclass
class _Probe:
    name: str
    documentation: str
    read: Probe
    labels: tuple[str, ...]
    last: ProbeValue | None = None
    ok: bool = False


@dataclass(eq=False)
class _Probes(Collector):
    probes: list[_Probe] = field(default_factory=list)

    def collect(self) -> Iterator[Metric]:
        for probe in self.probes:
            if not probe.ok or probe.last is None:
                continue
            family = GaugeMetricFamily(probe.name, probe.documentation, labels=list(probe.labels))
            if isinstance(probe.last, Mapping):
                for values, number in probe.last.items():
                    family.add_metric(list(values), float(number))
            else:
                family.add_metric([], float(probe.last))
            yield family


class Metrics:
    """A registry of this process's metrics; see the module docstring."""

    def __init__(self, *, probe_timeout: float = 5.0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.probe_timeout = probe_timeout
        self._probes = _Probes()
        self.registry.register(self._probes)
        self._lock = threading.Lock()
        self._names: set[str] = set()

    def _name(self, name: str) -> str:
        if not name.startswith("tranche_"):
            raise ValueError(f"metric names start with tranche_: {name!r}")
        with self._lock:
            if name in self._names:
                raise ValueError(f"metric {name!r} is registered already")
            self._names.add(name)
        return name

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A counter (exposed as ``<name>_total``), to ``inc()`` as work happens."""
        return Counter(self._name(name), documentation, list(labels), registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        """A gauge to ``set()``."""
        return Gauge(self._name(name), documentation, list(labels), registry=self.registry)

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    ) -> Histogram:
        """A histogram of durations or sizes, to ``observe()``."""
        return Histogram(
            self._name(name), documentation, list(labels), registry=self.registry, buckets=tuple(buckets)
        )

    def probe(self, name: str, documentation: str, read: Probe, *, labels: Sequence[str] = ()) -> None:
        """Read ``read()`` at each scrape and expose it as a gauge (see the module docstring)."""
        probe = _Probe(self._name(name), documentation, read, tuple(labels))
        with self._lock:
            self._probes.probes.append(probe)

    def registered(self, name: str) -> bool:
        with self._lock:
            return name in self._names

    async def refresh(self) -> None:
        """Read every probe (blocking ones on worker threads), each within ``probe_timeout`` seconds."""
        with self._lock:
            probes = list(self._probes.probes)
        await asyncio.gather(*(self._read(probe) for probe in probes))

    async def _read(self, probe: _Probe) -> None:
        try:
            if inspect.iscoroutinefunction(probe.read):
                value = await asyncio.wait_for(probe.read(), self.probe_timeout)
            else:
                value = await asyncio.wait_for(asyncio.to_thread(probe.read), self.probe_timeout)
        except Exception as error:
            probe.ok = False
            log.debug("probe %s failed: %s", probe.name, error)
            return
        probe.last = value
        probe.ok = True

    async def render(self) -> bytes:
        """The text exposition format of every metric, probes read afresh."""
        await self.refresh()
        return generate_latest(self.registry)
