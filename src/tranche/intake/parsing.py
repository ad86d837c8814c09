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
import sqlite3
import threading
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, NamedTuple

import bson

from tranche.intake.archive import Archive
from tranche.intake.duplicates import partition_entries
from tranche.intake.heads import Head, head_of, sqlite_changed_heads
from tranche.intake.parse import ParseOptions, loan_columns
from tranche.intake.tape import RawDocument, TapeFormat, bson_loan_ids, iter_documents, loan_id_of
from tranche.shared.loan import LoanStatus

# A parsed document: (index, loan_id, status, columns, content_hash) for a valid loan, with the columns as
# :func:`~tranche.intake.parse.loan_columns` gives them; or
# (index, loan_id, None, problems, None) with problems as (field, reason) pairs.
Parsed = tuple[int, str | None, str | None, tuple[Any, ...], bytes | None]


@dataclass(frozen=True, slots=True)
class AssessOrder:
    """How the diff's own pool call assesses the loans it is about to list or change (see
    :func:`parse_changing`): ``assess(lender_id, rows, *args)``, with ``rows`` as ``(loan_id, version,
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


class Triage(NamedTuple):
    """A slice's documents sorted by what the diff does with them: ``changing`` are those to decode, by
    document index, as ``(place in the slice, size, raw hash, last version or None)``; the others are
    counted, unchanged (same bytes as the last version, or a later tape's loan) or invalid (refused when the
    tape was read)."""

    read: int
    unchanged: int
    invalid: int
    changing: dict[int, tuple[int, int, bytes, Head | None]]


def scan_keys(scan: Scan, first: int, skip: Set[int]) -> list[tuple[str, bytes]]:
    """(loan id, raw hash) of each document of a scanned slice whose last version is to be looked up."""
    return [
        (loan_id, scan.raw_hash(i))
        for i, loan_id in enumerate(scan.loan_ids)
        if loan_id is not None and first + i not in skip
    ]


def triage(scan: Scan, first: int, skip: Set[int], heads: Mapping[str, Head | None]) -> Triage:
    """Sort a scanned slice's documents, given the last version of each loan it may change (``heads``: only
    those, as :func:`~tranche.intake.bulk.changed_heads` hands them back; a loan left out is unchanged)."""
    unchanged = invalid = 0
    changing: dict[int, tuple[int, int, bytes, Head | None]] = {}
    places = scan.places
    for i, loan_id in enumerate(scan.loan_ids):
        index = first + i
        if index in skip:
            invalid += 1  # its problem was recorded when the tape was read
            continue
        if loan_id is not None and loan_id not in heads:
            # Unchanged, or already superseded by a later tape (a replay of an older batch).
            unchanged += 1
            continue
        head = heads.get(loan_id) if loan_id is not None else None
        changing[index] = (places[2 * i], places[2 * i + 1], scan.raw_hash(i), head)
    return Triage(len(scan.loan_ids), unchanged, invalid, changing)


def parse_changing(
    lender_id: str,
    allow_doubles: bool,
    piece: TapeSlice,
    changing: Mapping[int, tuple[int, int, bytes, Head | None]],
    order: AssessOrder | None,
) -> tuple[list[Parsed], Any]:
    """Decode and validate the documents a slice changes (:attr:`Triage.changing`); with an ``order``, carry it
    out on the loans the diff will list or change: the active ones whose content differs from their last
    version's, each as the version it will be stored as (its result is None without an order)."""
    wanted = [(index, start, size) for index, (start, size, _h, _x) in changing.items()]
    parsed = parse_documents(lender_id, allow_doubles, piece, wanted)
    if order is None:
        return parsed, None
    rows = []
    for index, loan_id, status, columns, digest in parsed:
        if status == LoanStatus.ACTIVE:
            head = changing[index][3]
            if head is None:
                rows.append((loan_id, 1, *columns))
            elif digest != head.content_hash:
                rows.append((loan_id, head.version + 1, *columns))
    return parsed, order.assess(lender_id, rows, *order.args)


_readers = threading.local()


def _reader(database: str) -> sqlite3.Connection:
    """This thread's connection to the SQLite file ``database`` (kept for the next slice: opening one and
    reading the schema costs about as much as a slice's look-up); one a thread, the last file asked for."""
    held: tuple[str, sqlite3.Connection] | None = getattr(_readers, "held", None)
    if held is not None and held[0] == database:
        return held[1]
    if held is not None:
        held[1].close()
    raw = sqlite3.connect(database, timeout=60, isolation_level=None)
    _readers.held = (database, raw)
    return raw


def diff_slice(
    database: str,
    lender_id: str,
    sequence: int,
    allow_doubles: bool,
    piece: TapeSlice,
    skip: Set[int],
    order: AssessOrder | None,
) -> tuple[Triage, list[Parsed], Any]:
    """The diff's reading of a slice in one call, for a store in the SQLite file ``database``: scan it, look
    up the last versions of its loans there, sort its documents, and parse (and assess) those it changes.
    One call instead of a scan, a look-up and a parse: the slice crosses the process boundary once."""
    scan = scan_documents(piece)
    keys = scan_keys(scan, piece.first, skip)
    rows = sqlite_changed_heads(_reader(database), lender_id, keys, sequence) if keys else []
    sorted_ = triage(scan, piece.first, skip, {row[0]: head_of(row) for row in rows})
    if not sorted_.changing:
        return sorted_, [], None
    parsed, assessed = parse_changing(lender_id, allow_doubles, piece, sorted_.changing, order)
    return sorted_, parsed, assessed
