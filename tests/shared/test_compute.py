from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from tranche.shared.compute import Compute, InlineCompute, ProcessCompute


def square(x: int) -> int:
    return x * x


def worker_and_its_modules(_x: int) -> tuple[int, bool]:
    return os.getpid(), "tranche.intake.parsing" in sys.modules


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"refused {x}")
    return x


@pytest.fixture(params=["inline", "processes"])
def compute(request: pytest.FixtureRequest) -> Iterator[Compute]:
    made: Compute = InlineCompute() if request.param == "inline" else ProcessCompute(2)
    yield made
    made.close()


def test_map_gives_the_results_in_the_order_of_the_calls(compute: Compute) -> None:
    assert list(compute.map(square, ((x,) for x in range(50)), window=4)) == [x * x for x in range(50)]


def test_map_takes_at_most_a_window_of_calls_ahead(compute: Compute) -> None:
    taken: list[int] = []

    def calls() -> Iterator[tuple[int]]:
        for x in range(100):
            taken.append(x)
            yield (x,)

    results = compute.map(square, calls(), window=3)
    assert next(results) == 0
    assert len(taken) <= 3
    assert list(results) == [x * x for x in range(1, 100)]


def test_a_failed_call_raises_where_its_result_is_taken(compute: Compute) -> None:
    results = compute.map(fail_on, ((x, 3) for x in range(10)), window=2)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="refused 3"):
        next(results)
    assert compute.run(fail_on, 4, 3) == 4


def test_started_pool_runs_calls_in_every_worker_with_the_modules_imported() -> None:
    compute = ProcessCompute(2)
    try:
        compute.start("tranche.intake.parsing")
        seen = set(compute.map(worker_and_its_modules, ((x,) for x in range(200)), window=8))
        assert {imported for _pid, imported in seen} == {True}
        pids = {pid for pid, _imported in seen}
        assert os.getpid() not in pids
        assert 1 <= len(pids) <= 2
    finally:
        compute.close()
