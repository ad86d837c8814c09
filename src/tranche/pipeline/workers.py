"""Who runs the stages: registered workers with a heartbeat, their leases handed back when they die, and the
lenders (partitions) an operator pins to a worker.

Every running :class:`~tranche.pipeline.PipelineRunner` registers a row in ``pipeline_workers`` under the id
its leases carry, and beats every couple of seconds. A worker is *gone* when

- its heartbeat is older than the timeout (another node, or a process that hangs), or
- it ran on this very node (same host, boot and pid namespace) and its process no longer exists: a restart
  after ``kill -9`` recognises its predecessor at once, without waiting for any timeout.

The leases of a gone worker are made due at once, so its items are claimed again within a poll; nothing else
changes hands, so a worker that was only slow cannot be robbed of more than the fencing token already
protects. Another node's live worker is never judged by pid.

Routing: any worker serves any partition. An operator may pin a partition to a worker *name* (several
processes may share one); then only workers of that name claim its items, while at least one of them is
alive. A pin whose worker is not running is not obeyed (every worker serves the partition, and says so in its
log) until a worker of that name is back, so no partition is ever left without a worker.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

from sqlalchemy import Connection, delete, func, insert, select, update

from tranche.pipeline.model import LEASED
from tranche.pipeline.tables import pipeline_items, pipeline_pins, pipeline_workers
from tranche.shared.clock import stored_utc

_workers = pipeline_workers
_pins = pipeline_pins
_items = pipeline_items


@dataclass(frozen=True)
class Node:
    """Where a process runs, precisely enough to judge a pid: host name, boot and pid namespace."""

    host: str
    boot: str
    pid_namespace: str

    def __str__(self) -> str:
        return f"{self.host}/{self.boot}/{self.pid_namespace}"[:255]


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


@cache
def this_node() -> Node:
    """The node this process runs on (host name, kernel boot id, pid namespace)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return Node(socket.gethostname(), _read("/proc/sys/kernel/random/boot_id"), namespace)


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, in the kernel's clock ticks since boot; None if there is no such
    process. Where ``/proc`` is missing, "?" for a process that exists."""
    stat = _read(f"/proc/{pid}/stat")
    if stat:
        # The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
        fields = stat.rsplit(")", 1)[-1].split()
        return fields[19] if len(fields) > 19 else "?"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return "?"
    return "?" if not Path("/proc").is_dir() else None


def process_gone(pid: int, started: str) -> bool:
    """Whether the process registered as (``pid``, ``started``) on this node no longer runs."""
    now = process_start(pid)
    if now is None:
        return True
    return now != "?" and started != "?" and now != started


@dataclass(frozen=True)
class WorkerView:
    """A registered worker as the store has it, and whether it is alive at ``now``."""

    id: str
    name: str
    node: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    alive: bool
    leases: int


@dataclass(frozen=True)
class Pin:
    """A partition pinned to a worker name; ``obeyed`` while a worker of that name is alive."""

    partition: str
    worker: str
    pinned_at: datetime
    obeyed: bool


def register(
    conn: Connection, *, worker_id: str, name: str, node: Node, pid: int, started: str, now: datetime
) -> None:
    """Insert this worker's row, or beat if it is there already (a re-registration after an outage)."""
    beat = conn.execute(update(_workers).where(_workers.c.id == worker_id).values(heartbeat_at=now))
    if beat.rowcount == 0:
        conn.execute(
            insert(_workers).values(
                id=worker_id,
                name=name,
                node=str(node),
                pid=pid,
                process_start=started,
                started_at=now,
                heartbeat_at=now,
            )
        )


def deregister(conn: Connection, worker_id: str) -> None:
    """Remove a worker that stops cleanly (it holds no lease any more)."""
    conn.execute(delete(_workers).where(_workers.c.id == worker_id))


@dataclass(frozen=True)
class Reaped:
    """A gone worker whose leases were handed back."""

    id: str
    name: str
    why: str
    leases: int


def reap(conn: Connection, *, me: str, node: Node, now: datetime, timeout: timedelta) -> list[Reaped]:
    """Hand back the leases of every gone worker (see the module's docstring) and forget those workers.

    The leases are made due now: the next claim of their stage takes them over (traced ``lease_expired``),
    with the attempt their dead holder's claim counted, so an item that keeps killing its worker is parked
    after its stage's ``max_attempts``.
    """
    gone: list[tuple[str, str, str]] = []
    here = str(node)
    for row in conn.execute(select(_workers).where(_workers.c.id != me)):
        beat = stored_utc(row.heartbeat_at)
        if beat < now - timeout:
            gone.append((row.id, row.name, f"no heartbeat for {(now - beat).total_seconds():.0f}s"))
        elif row.node == here and process_gone(row.pid, row.process_start):
            gone.append((row.id, row.name, f"its process {row.pid} on this node is gone"))
    reaped = []
    for worker_id, name, why in gone:
        result = conn.execute(
            update(_items)
            .where(_items.c.status == LEASED, _items.c.lease_owner == worker_id)
            .values(lease_expires_at=now, next_run_at=now)
        )
        conn.execute(delete(_workers).where(_workers.c.id == worker_id))
        reaped.append(Reaped(worker_id, name, why, result.rowcount))
    return reaped


def live_names(conn: Connection, *, now: datetime, timeout: timedelta) -> frozenset[str]:
    """Names of the workers whose heartbeat is recent."""
    rows = conn.execute(select(_workers.c.name).where(_workers.c.heartbeat_at >= now - timeout).distinct())
    return frozenset(rows.scalars())


def pins(conn: Connection) -> dict[str, str]:
    """Every pin: partition → worker name."""
    return {row.partition: row.worker for row in conn.execute(select(_pins.c.partition, _pins.c.worker))}


def pin(conn: Connection, partition: str, worker: str, *, now: datetime) -> None:
    """Pin ``partition`` to the workers named ``worker`` (replacing its pin, if any)."""
    changed = conn.execute(
        update(_pins).where(_pins.c.partition == partition).values(worker=worker, pinned_at=now)
    )
    if changed.rowcount == 0:
        conn.execute(insert(_pins).values(partition=partition, worker=worker, pinned_at=now))


def unpin(conn: Connection, partition: str) -> bool:
    """Let every worker serve ``partition`` again; False if it was not pinned."""
    return conn.execute(delete(_pins).where(_pins.c.partition == partition)).rowcount == 1


def list_pins(conn: Connection, *, now: datetime, timeout: timedelta) -> list[Pin]:
    """Every pin, by partition, with whether it is obeyed now."""
    live = live_names(conn, now=now, timeout=timeout)
    rows = conn.execute(select(_pins).order_by(_pins.c.partition))
    return [Pin(r.partition, r.worker, stored_utc(r.pinned_at), r.worker in live) for r in rows]


def list_workers(conn: Connection, *, now: datetime, timeout: timedelta) -> list[WorkerView]:
    """Every registered worker, by name then start, with the leases it holds."""
    held: Mapping[str, int] = dict(
        conn.execute(
            select(_items.c.lease_owner, func.count())
            .where(_items.c.status == LEASED)
            .group_by(_items.c.lease_owner)
        )
        .tuples()
        .all()
    )
    rows = conn.execute(select(_workers).order_by(_workers.c.name, _workers.c.started_at))
    return [
        WorkerView(
            id=r.id,
            name=r.name,
            node=r.node,
            pid=r.pid,
            started_at=stored_utc(r.started_at),
            heartbeat_at=stored_utc(r.heartbeat_at),
            alive=stored_utc(r.heartbeat_at) >= now - timeout,
            leases=int(held.get(r.id, 0)),
        )
        for r in rows
    ]


def excluded_partitions(pinned: Mapping[str, str], live: Iterable[str], me: str) -> frozenset[str]:
    """The partitions a worker named ``me`` must leave alone: those pinned to another worker that is alive."""
    alive = set(live)
    return frozenset(p for p, worker in pinned.items() if worker != me and worker in alive)
