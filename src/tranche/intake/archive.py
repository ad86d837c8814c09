"""The archive keeps every uploaded tape exactly as it arrived, for processing and replay.

``Archive`` is the port; ``LocalArchive`` keeps files under a directory (the embedded default). An object
store (S3 and the like) implements the same three operations. Keys are content addresses, so the same bytes
are stored once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


@dataclass(frozen=True, slots=True)
class ArchivedTape:
    key: str
    sha256: str
    size: int


class ArchiveWriter(Protocol):
    def write(self, chunk: bytes) -> None: ...

    def finish(self) -> ArchivedTape:
        """Make the tape durable under its content address and return where it is."""
        ...

    def abort(self) -> None: ...


class Archive(Protocol):
    def writer(self, lender_id: str, suffix: str) -> ArchiveWriter:
        """Start writing a tape; nothing is visible under its key before ``finish``."""
        ...

    def open(self, key: str) -> BinaryIO:
        """Read an archived tape from the start."""
        ...

    def exists(self, key: str) -> bool: ...


class _LocalWriter:
    def __init__(self, root: Path, lender_id: str, suffix: str) -> None:
        self._root = root
        self._lender = lender_id
        self._suffix = suffix
        directory = root / "incoming"
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix=f"{lender_id}-", suffix=".part")
        self._file = os.fdopen(fd, "wb")
        self._path = Path(name)
        self._hash = hashlib.sha256()
        self._size = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._hash.update(chunk)
        self._size += len(chunk)

    def finish(self) -> ArchivedTape:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        digest = self._hash.hexdigest()
        key = f"{self._lender}/{digest}.{self._suffix}"
        target = self._root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path, target)
        return ArchivedTape(key=key, sha256=digest, size=self._size)

    def abort(self) -> None:
        self._file.close()
        self._path.unlink(missing_ok=True)


class LocalArchive:
    """Tapes as files under ``root/<lender>/<sha256>.<format>``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def writer(self, lender_id: str, suffix: str) -> ArchiveWriter:
        return _LocalWriter(self.root, lender_id, suffix)

    def open(self, key: str) -> BinaryIO:
        return (self.root / key).open("rb")

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()
