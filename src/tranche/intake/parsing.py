"""Decoding and validating the documents of a slice: :func:`parse_documents`, which the diff stage runs
through a :class:`~tranche.shared.compute.Compute` (in a pool of processes by default).

Decoding BSON and validating a loan is the CPU-heavy part of intake; the store's part is not. With a pool,
slices are parsed in other processes while this one looks up and writes, so a tape uses every core. What
crosses the process boundary is small: where a slice lies in the archive (:class:`TapeSlice`; the worker
reads the bytes itself) in, compact tuples out. This module imports only the parser (no SQLAlchemy, no web
stack), so neither does a worker that only parses.
"""

from __future__ import annotations

import hashlib
import io
import json
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import bson

from tranche.intake.archive import Archive
from tranche.intake.duplicates import partition_entries
from tranche.intake.loan import LoanStatus
from tranche.intake.parse import ParseOptions, loan_columns
from tranche.intake.tape import RawDocument, TapeFormat, bson_loan_ids, iter_documents, loan_id_of

# A parsed document: (index, loan_id, status, columns, content_hash) for a valid loan, with the columns as
# :func:`~tranche.intake.parse.loan_columns` gives them; or
# (index, loan_id, None, problems, None) with problems as (field, reason) pairs.
Parsed = tuple[int, str | None, str | None, tuple[Any, ...], bytes | None]


@dataclass(frozen=True, slots=True)
class AssessOrder:
    """How the diff's own pool call assesses the loans it is about to list or change (see
    :func:`parse_and_assess`): ``assess(lender_id, rows, *args)``, with ``rows`` as ``(loan_id, version,
    *columns)``. ``assess`` is a module-level function, so that the order pickles."""

    assess: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class TapeSlice:
    """Where a slice lies in an archived tape: ``length`` bytes from ``offset``, document number ``first`` on.
    It pickles small, and whoever computes on it reads the bytes from the archive."""

    archive: Archive
    key: str
    format: str
    offset: int
    length: int
    first: int

    def read(self) -> bytes:
        with self.archive.open(self.key) as stream:
            stream.seek(self.offset)
            return stream.read(self.length)

    def documents(self, data: bytes) -> Iterator[RawDocument]:
        """The documents of the slice, from its bytes (as :meth:`read` gives them)."""
        found = iter_documents(
            io.BytesIO(data), TapeFormat(self.format), start_index=self.first, start_offset=self.offset
        )
        return (doc for doc in found if isinstance(doc, RawDocument))


class Scan(NamedTuple):
    """A slice's documents as the diff first sees them: the i-th is document ``first + i`` of the tape, at
    ``places[2i]`` in the slice, ``places[2i + 1]`` bytes long, with a loan id (None if it has no string
    id) and the hash of its bytes, ``raw_hashes[16i:16i + 16]``."""

    loan_ids: list[str | None]
    places: array[int]
    raw_hashes: bytes

    def raw_hash(self, i: int) -> bytes:
        return self.raw_hashes[16 * i : 16 * i + 16]


def scan_documents(piece: TapeSlice) -> Scan:
    """Split a slice into its documents, each with its loan id (found without decoding) and the hash the
    diff compares."""
    blake2b = hashlib.blake2b
    loan_ids: list[str | None] = []
    places = array("q")
    hashes = bytearray()
    data = piece.read()
    if piece.format == TapeFormat.BSON:
        view = memoryview(data)
        for pos, size, loan_id in bson_loan_ids(data):
            loan_ids.append(loan_id)
            places.extend((pos, size))
            hashes += blake2b(view[pos : pos + size], digest_size=16).digest()
    else:
        for doc in piece.documents(data):
            loan_ids.append(loan_id_of(doc.data, TapeFormat.NDJSON))
            places.extend((doc.offset - piece.offset, doc.size))
            hashes += blake2b(doc.data, digest_size=16).digest()
    return Scan(loan_ids, places, bytes(hashes))


def key_entries(piece: TapeSlice) -> list[array[int]]:
    """The duplicate finder's entries (:func:`~tranche.intake.duplicates.partition_entries`) for the loan ids
    of a slice."""
    data = piece.read()
    if piece.format == TapeFormat.BSON:
        first, offset = piece.first, piece.offset
        ids = (
            (loan_id, first + i, offset + pos) for i, (pos, _size, loan_id) in enumerate(bson_loan_ids(data))
        )
    else:
        ids = (
            (loan_id_of(doc.data, TapeFormat.NDJSON), doc.index, doc.offset) for doc in piece.documents(data)
        )
    return partition_entries((loan_id, index, at) for loan_id, index, at in ids if loan_id is not None)


def parse_documents(
    lender_id: str, allow_doubles: bool, piece: TapeSlice, wanted: Sequence[tuple[int, int, int]]
) -> list[Parsed]:
    """Decode and validate the documents of a slice named by (index, position in the slice, size)."""
    options = ParseOptions(allow_double_amounts=allow_doubles)
    decode = bson.decode if piece.format == "bson" else json.loads
    out: list[Parsed] = []
    data = piece.read()
    for index, start, size in wanted:
        try:
            decoded = decode(data[start : start + size])
        except Exception as exc:  # the document's own bytes are bad: it alone is refused
            out.append((index, None, None, (("(tape)", f"cannot be decoded: {exc}"),), None))
            continue
        if not isinstance(decoded, dict):
            out.append((index, None, None, (("(tape)", "is not a document (JSON object)"),), None))
            continue
        found = loan_columns(lender_id, decoded, options)
        if isinstance(found, list):
            loan_id = decoded.get("loan_id")
            problems = tuple((p.field, p.reason) for p in found)
            out.append((index, loan_id if isinstance(loan_id, str) else None, None, problems, None))
            continue
        columns, digest = found
        out.append((index, decoded["loan_id"], columns[0], columns, digest))
    return out


def parse_and_assess(
    lender_id: str,
    allow_doubles: bool,
    piece: TapeSlice,
    wanted: Sequence[tuple[int, int, int]],
    heads: Mapping[int, tuple[int, bytes | None]],
    order: AssessOrder,
) -> tuple[list[Parsed], Any]:
    """:func:`parse_documents`, then ``order`` on the loans the diff will list or change: the active ones
    whose content differs from their last version's. ``heads`` gives, per document index, the version it
    would be stored as and the content hash of the last version (None for a new loan)."""
    parsed = parse_documents(lender_id, allow_doubles, piece, wanted)
    rows = []
    for index, loan_id, status, columns, digest in parsed:
        if status == LoanStatus.ACTIVE:
            version, last_hash = heads[index]
            if digest != last_hash:
                rows.append((loan_id, version, *columns))
    return parsed, order.assess(lender_id, rows, *order.args)
