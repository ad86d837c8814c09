"""Finding loan ids that occur more than once in one tape, in bounded memory.

Each document contributes (hash of its loan id, position, byte offset): 24 bytes. Up to a quarter of a
million entries stay in memory; past that every entry is spilled to one of 16 files chosen by the hash's low
bits, and each file is sorted on its own afterwards, so memory stays at a few megabytes for a tape of any
size. Equal hashes are only candidates: the caller confirms them against the real loan ids.
"""

from __future__ import annotations

import tempfile
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_PARTITIONS = 16
_IN_MEMORY = 256 * 1024


class DuplicateFinder:
    def __init__(self) -> None:
        self._parts = [array("q") for _ in range(_PARTITIONS)]
        self._held = 0
        self._spill: tempfile.TemporaryDirectory[str] | None = None

    def add(self, key: str, index: int, offset: int) -> None:
        # str hashes are stable within one process, which is all one tape's scan needs.
        h = hash(key)
        part = self._parts[h & (_PARTITIONS - 1)]
        part.append(h)
        part.append(index)
        part.append(offset)
        self._held += 1
        if self._held >= _IN_MEMORY:
            self._flush()

    def _flush(self) -> None:
        if self._spill is None:
            self._spill = tempfile.TemporaryDirectory(prefix="tranche-dups-")
        for number, part in enumerate(self._parts):
            if part:
                with Path(self._spill.name, f"{number}.bin").open("ab") as file:
                    part.tofile(file)
                self._parts[number] = array("q")
        self._held = 0

    def candidate_groups(self) -> Iterator[list[tuple[int, int]]]:
        """Groups of (position, offset) whose loan ids hash alike, each group in tape order."""
        try:
            if self._spill is not None:
                self._flush()
            for number in range(_PARTITIONS):
                if self._spill is not None:
                    path = Path(self._spill.name, f"{number}.bin")
                    if not path.exists():
                        continue
                    entries = np.fromfile(path, dtype=np.int64)
                else:
                    entries = np.frombuffer(self._parts[number], dtype=np.int64)
                if entries.size == 0:
                    continue
                yield from _groups(entries.reshape(-1, 3))
        finally:
            if self._spill is not None:
                self._spill.cleanup()
                self._spill = None
            self._parts = [array("q") for _ in range(_PARTITIONS)]


def _groups(entries: np.ndarray) -> Iterator[list[tuple[int, int]]]:
    order = np.argsort(entries[:, 0], kind="stable")
    hashes = entries[order, 0]
    same_as_next = hashes[1:] == hashes[:-1]
    if not same_as_next.any():
        return
    starts = np.flatnonzero(np.diff(np.concatenate(([False], same_as_next)).astype(np.int8)) == 1)
    for start in starts:
        end = start + 1
        while end < len(hashes) and hashes[end] == hashes[start]:
            end += 1
        rows = entries[order[start:end]]
        yield sorted((int(r[1]), int(r[2])) for r in rows)
