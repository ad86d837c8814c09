"""The duplicate finder names every loan id seen more than once in a tape, in memory or spilled to files."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tranche.intake import duplicates
from tranche.intake.duplicates import DuplicateFinder


def expected_groups(keys: list[str]) -> list[list[tuple[int, int]]]:
    at: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for position, key in enumerate(keys):
        at[key].append((position, position * 100))
    return sorted(group for group in at.values() if len(group) > 1)


ids = st.lists(st.sampled_from([f"L{n}" for n in range(40)]) | st.text(min_size=1, max_size=6), max_size=300)


@settings(max_examples=60, deadline=None)
@given(keys=ids, held=st.sampled_from([7, 1_000_000]))  # 7: spilled to files many times over
def test_the_groups_are_exactly_the_repeated_ids(keys: list[str], held: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(duplicates, "_IN_MEMORY", held)
        finder = DuplicateFinder()
        for position, key in enumerate(keys):
            finder.add(key, position, position * 100)
        assert sorted(finder.candidate_groups()) == expected_groups(keys)
