"""One owner per singleton job, with fencing: in one process on both stores, and with real processes
killed (SIGKILL) or frozen (SIGSTOP) on PostgreSQL."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tranche.store.ownership import Ownership, OwnershipLostError, Tenure, fence, owner_of

CHILD = Path(__file__).with_name("ownership_child.py")


def make(engine: Engine, name: str, **options: object) -> Ownership:
    settings: dict[str, object] = {"ttl": 0.9, "heartbeat": 0.2, **options}
    return Ownership(engine, owner=name, **settings)  # type: ignore[arg-type]


def test_the_first_claimant_owns_the_job_and_the_second_is_a_standby(engine: Engine) -> None:
    first, second = make(engine, "first"), make(engine, "second")
    a, b = first.claim("outbox-relay"), second.claim("outbox-relay")
    first.step()
    second.step()
    assert a.held and not b.held
    assert a.state().state == "owner"
    assert b.state().state == "standby" and b.state().holder == "first"
    with engine.connect() as conn:
        assert owner_of(conn, "outbox-relay") == a.tenure


def test_a_released_job_goes_to_the_standby_with_a_higher_epoch(engine: Engine) -> None:
    first, second = make(engine, "first"), make(engine, "second")
    a, b = first.claim("ledger-drift"), second.claim("ledger-drift")
    first.step()
    second.step()
    old = a.tenure
    assert old is not None
    a.release()
    second.step()
    assert b.tenure is not None and b.tenure.epoch == old.epoch + 1
    first.stop()
    second.stop()


def test_a_stale_owner_cannot_commit_work_after_a_takeover(engine: Engine) -> None:
    first, second = make(engine, "first"), make(engine, "second")
    a, b = first.claim("market:EUR"), second.claim("market:EUR")
    first.step()
    with engine.begin() as conn:
        assert a.fence(conn) == a.tenure  # the owner records its work
    stale = a.tenure
    assert stale is not None
    a.release()
    second.step()
    assert b.held
    with pytest.raises(OwnershipLostError), engine.begin() as conn:
        fence(conn, stale)
    with pytest.raises(OwnershipLostError), engine.begin() as conn:
        a.fence(conn)
    second.stop()


def test_a_lease_that_is_not_renewed_is_taken_over_after_its_ttl(engine: Engine) -> None:
    first, second = make(engine, "first", mode="lease"), make(engine, "second", mode="lease")
    a, b = first.claim("lease-job"), second.claim("lease-job")
    first.step()
    second.step()
    assert a.held and not b.held
    time.sleep(0.5)
    second.step()
    assert not b.held, "a lease younger than its ttl is respected"
    time.sleep(0.6)
    second.step()
    assert b.held and b.tenure is not None and a.tenure is not None
    assert b.tenure.epoch == a.tenure.epoch + 1
    first.step()  # the old owner's renewal fails: it learns that it lost the job
    assert not a.held
    assert a.state().holder == "second" or a.state().state == "standby"


def test_the_owner_renews_its_lease_and_keeps_the_job(engine: Engine) -> None:
    first, second = make(engine, "first", mode="lease"), make(engine, "second", mode="lease")
    a, b = first.claim("kept"), second.claim("kept")
    for _ in range(8):
        first.step()
        second.step()
        time.sleep(0.2)
    assert a.held and not b.held


def test_callbacks_report_every_change_of_owner(engine: Engine) -> None:
    events: queue.Queue[tuple[str, Tenure]] = queue.Queue()
    first = make(engine, "first")
    first.claim(
        "reported",
        on_acquired=lambda t: events.put(("acquired", t)),
        on_lost=lambda t: events.put(("lost", t)),
    )
    first.start()
    kind, tenure = events.get(timeout=5)
    assert kind == "acquired" and tenure.owner == "first"
    first.stop()
    assert events.get(timeout=5) == ("lost", tenure)


@pytest.mark.postgres
def test_a_takeover_waits_for_the_old_owners_transaction_in_flight(postgres_engine: Engine) -> None:
    engine = postgres_engine
    first, second = make(engine, "first", mode="lease"), make(engine, "second", mode="lease")
    a, b = first.claim("fenced"), second.claim("fenced")
    first.step()
    tenure = a.tenure
    assert tenure is not None
    committed = threading.Event()
    taken_after_commit: list[bool] = []
    with engine.begin() as conn:
        fence(conn, tenure)
        time.sleep(1.0)  # the lease expires while the owner's transaction is still open

        def take() -> None:
            second.step()
            taken_after_commit.append(committed.is_set())

        taker = threading.Thread(target=take)
        taker.start()
        time.sleep(0.5)
        assert taker.is_alive(), "the takeover waits for the fenced transaction"
        committed.set()
    taker.join(10)
    assert b.held and taken_after_commit == [True]


# Real processes on PostgreSQL


class Child:
    def __init__(self, url: str, job: str, *, ttl: float = 3.0, heartbeat: float = 0.2) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), url, job, str(ttl), str(heartbeat)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line.rstrip())

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {prefix!r} within {timeout}s; log:\n" + "\n".join(self.log))
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line.startswith(prefix):
                return line

    def nothing(self, prefix: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return
            assert not line.startswith(prefix), f"unexpected {line!r}"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        os.kill(self.process.pid, sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.stop()


@pytest.mark.postgres
@pytest.mark.slow
def test_a_standby_process_takes_over_within_seconds_when_the_owner_is_killed(
    postgres_engine: Engine, children: list[Child]
) -> None:
    url = postgres_engine.url.render_as_string(hide_password=False)
    owner = Child(url, "outbox-relay")
    children.append(owner)
    first = int(owner.expect("owner", 30).split()[1])
    standby = Child(url, "outbox-relay")
    children.append(standby)
    standby.expect("started", 30)
    standby.nothing("owner", 1.0)
    assert any("standby for outbox-relay: owned by" in line for line in standby.log)

    owner.kill()
    killed = time.monotonic()
    second = int(standby.expect("owner", 10).split()[1])
    assert second == first + 1
    assert time.monotonic() - killed < 3.0, (
        "a killed owner's lock frees at once; a heartbeat later it is taken"
    )
    with postgres_engine.begin() as conn, pytest.raises(OwnershipLostError):
        fence(conn, Tenure("outbox-relay", first, "whoever"))


@pytest.mark.postgres
@pytest.mark.slow
def test_an_owner_that_hangs_with_its_session_open_is_replaced_after_the_ttl(
    postgres_engine: Engine, children: list[Child]
) -> None:
    url = postgres_engine.url.render_as_string(hide_password=False)
    owner = Child(url, "ledger-drift", ttl=2.0)
    children.append(owner)
    first = int(owner.expect("owner", 30).split()[1])
    standby = Child(url, "ledger-drift", ttl=2.0)
    children.append(standby)
    standby.expect("started", 30)

    owner.kill(signal.SIGSTOP)  # frozen: its connection stays open, its heartbeats stop
    try:
        assert int(standby.expect("owner", 15).split()[1]) == first + 1
    finally:
        owner.kill(signal.SIGCONT)
    # Woken up, the old owner finds its session ended and stands down.
    assert int(owner.expect("lost", 15).split()[1]) == first
