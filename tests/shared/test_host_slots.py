"""TRANCHE_PARSE_PROCESSES is a budget of the host: the slots that every process of the host shares."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tranche.shared.compute import HostSlots, ProcessCompute, make_compute


def test_two_processes_sharing_a_budget_of_two_hold_at_most_two_slots(tmp_path: Path) -> None:
    # Two HostSlots on one directory stand for two processes: flock locks conflict between open files.
    first, second = HostSlots(tmp_path, 2), HostSlots(tmp_path, 2)
    held = [first.acquire(), second.acquire()]
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(second.acquire()))
    waiter.start()
    time.sleep(0.2)
    assert got == [], "a third call waits while the budget is spent"
    first.release(held[0])
    waiter.join(5)
    assert len(got) == 1
    second.release(held[1])
    second.release(got[0])


def test_a_pool_made_with_a_run_directory_shares_the_hosts_budget(tmp_path: Path) -> None:
    compute = make_compute(2, run_dir=tmp_path)
    assert isinstance(compute, ProcessCompute) and compute.slots is not None
    assert compute.slots.count == 2 and compute.slots.directory == tmp_path / "parse-slots"
    try:
        assert compute.run(sum, [1, 2, 3]) == 6
        assert list(compute.map(abs, [(-1,), (-2,), (-3,)], window=2)) == [1, 2, 3]
    finally:
        compute.close()
