"""Finding loan ids that occur more than once in one tape, in bounded memory.

Each document contributes (hash of its loan id, position, byte offset): 24 bytes. Up to 65,536 entries
(1.5 MB) stay in memory; past that every entry is spilled to one of 64 files chosen by the hash's low bits,
and each file is grouped on its own afterwards: a sixty-fourth of the tape at a time (a few MB for a tape of
ten million loans). Equal hashes are only candidates: the caller confirms them against the real loan ids.

The entries of a slice can be made elsewhere (:func:`partition_entries`, in a pool's process) and added
whole (:meth:`DuplicateFinder.extend`): the hash is the same in every process.
"""

from __future__ import annotations

import hashlib
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

_PARTITIONS = 64
_IN_MEMORY = 64 * 1024


def key_hash(key: str) -> int:
    """A 64-bit hash of a loan id, the same in every process (Python's ``hash`` of a str is not)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little", signed=True)


def partition_entries(keys: Iterable[tuple[str, int, int]]) -> list[array[int]]:
    """The finder's entries for (loan id, position, offset) triples, one flat array a partition, for
    :meth:`DuplicateFinder.extend`."""
    parts = [array("q") for _ in range(_PARTITIONS)]
    for key, index, offset in keys:
        _put(parts, key, index, offset)
    return parts


def _put(parts: Sequence[array[int]], key: str, index: int, offset: int) -> None:
    h = key_hash(key)
    parts[h & (_PARTITIONS - 1)].extend((h, index, offset))


class DuplicateFinder:
    def __init__(self) -> None:
        self._parts = [array("q") for _ in range(_PARTITIONS)]
        self._held = 0
        self._spill: tempfile.TemporaryDirectory[str] | None = None

    def add(self, key: str, index: int, offset: int) -> None:
        _put(self._parts, key, index, offset)
        self._held += 1
        if self._held >= _IN_MEMORY:
            self._flush()

    def extend(self, parts: Sequence[array[int]]) -> None:
        """Add the entries :func:`partition_entries` made."""
        for number, entries in enumerate(parts):
            if entries:
                self._parts[number].extend(entries)
                self._held += len(entries) // 3
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
                    entries = array("q")
                    with path.open("rb") as file:
                        entries.frombytes(file.read())
                else:
                    entries = self._parts[number]
                if entries:
                    yield from _groups(entries)
        finally:
            if self._spill is not None:
                self._spill.cleanup()
                self._spill = None
            self._parts = [array("q") for _ in range(_PARTITIONS)]


def _groups(entries: array[int]) -> Iterator[list[tuple[int, int]]]:
    """From flat (hash, position, offset) triples, the (position, offset) of each hash seen more than once."""
    hashes = entries[0::3]
    seen: set[int] = set()
    repeated: set[int] = set()
    for h in hashes:
        if h in seen:
            repeated.add(h)
        else:
            seen.add(h)
    del seen
    if not repeated:
        return
    groups: dict[int, list[tuple[int, int]]] = {}
    for at, h in enumerate(hashes):
        if h in repeated:
            groups.setdefault(h, []).append((entries[3 * at + 1], entries[3 * at + 2]))
    for group in groups.values():
        yield sorted(group)
