"""Reading a lender's tape as a stream of raw documents, in bounded memory.

A BSON tape is what ``mongodump`` writes: BSON documents back to back, each starting with its int32 length.
We split on that length prefix without decoding (decoding happens later, only for documents that changed),
so a tape of any size is read with a fixed buffer. A JSON Lines tape has one JSON object per line.

A corrupt or truncated tail cannot be resynchronised (a BSON document carries no marker to search for), so
the reader reports it as a :class:`TapeDamage` and stops; every document before it is kept.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

_MIN_DOC = 5  # int32 length + terminating NUL
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024  # MongoDB's own limit on one document
_CHUNK = 1 << 20


class TapeFormat(enum.StrEnum):
    BSON = "bson"
    NDJSON = "ndjson"


@dataclass(frozen=True, slots=True)
class RawDocument:
    index: int  # position in the tape, from 0
    offset: int  # byte offset of the document in the tape
    data: bytes
    size: int  # bytes the document takes in the tape (a JSON line's terminator included)


@dataclass(frozen=True, slots=True)
class TapeDamage:
    """The tape cannot be read past ``offset``: a truncated or corrupt document at ``index``."""

    index: int
    offset: int
    reason: str


def iter_documents(
    stream: BinaryIO,
    fmt: TapeFormat,
    *,
    start_index: int = 0,
    start_offset: int = 0,
    limit: int | None = None,
) -> Iterator[RawDocument | TapeDamage]:
    """Yield raw documents from ``stream`` (positioned at ``start_offset``), then at most one damage report.

    ``limit`` bounds the number of bytes read, for reading one slice of an archived tape.
    """
    if fmt is TapeFormat.BSON:
        return _iter_bson(stream, start_index, start_offset, limit)
    return _iter_ndjson(stream, start_index, start_offset, limit)


Span = tuple[int, int, int]
"""Where a document lies in a tape: (index, byte offset, size)."""


def iter_spans(stream: BinaryIO, fmt: TapeFormat) -> Iterator[Span | TapeDamage]:
    """Where each document of the tape lies, then at most one damage report, as :func:`iter_documents`
    finds them but without copying a document out: what cutting a tape into slices needs."""
    if fmt is TapeFormat.NDJSON:
        for doc in _iter_ndjson(stream, 0, 0, None):
            yield doc if isinstance(doc, TapeDamage) else (doc.index, doc.offset, doc.size)
        return
    for frame in _bson_frames(stream, 0, 0, None):
        if isinstance(frame, TapeDamage):
            yield frame
            return
        _buffer, _pos, index, offset, length = frame
        yield index, offset, length


def _iter_bson(
    stream: BinaryIO, index: int, offset: int, limit: int | None
) -> Iterator[RawDocument | TapeDamage]:
    for frame in _bson_frames(stream, index, offset, limit):
        if isinstance(frame, TapeDamage):
            yield frame
            return
        buffer, pos, index, offset, length = frame
        yield RawDocument(index, offset, buffer[pos : pos + length], length)


def _bson_frames(
    stream: BinaryIO, index: int, offset: int, limit: int | None
) -> Iterator[tuple[bytes, int, int, int, int] | TapeDamage]:
    """Each whole document as (buffer, its position in the buffer, index, offset, length), then at most one
    damage report. The buffer holds about a chunk of the tape."""
    remaining = limit
    buffer = b""
    pos = 0  # position of the next document within buffer
    eof = False
    while True:
        available = len(buffer) - pos
        if available >= 4:
            length = int.from_bytes(buffer[pos : pos + 4], "little", signed=True)
            if length < _MIN_DOC or length > MAX_DOCUMENT_BYTES:
                yield _bad_length(index, offset, length)
                return
            if available >= length:
                end = pos + length
                if buffer[end - 1] != 0:
                    yield _no_nul(index, offset)
                    return
                yield buffer, pos, index, offset, length
                index += 1
                offset += length
                pos = end
                continue
        if eof:
            break
        want = _CHUNK if remaining is None else min(_CHUNK, remaining)
        chunk = stream.read(want) if want > 0 else b""
        if remaining is not None:
            remaining -= len(chunk)
        if not chunk:
            eof = True
        buffer = buffer[pos:] + chunk
        pos = 0
    if len(buffer) > pos:
        yield _truncated(index, offset, buffer, pos)


def _bad_length(index: int, offset: int, length: int) -> TapeDamage:
    return TapeDamage(
        index, offset, f"document length {length} is not a valid BSON length; the tape is corrupt from here"
    )


def _no_nul(index: int, offset: int) -> TapeDamage:
    return TapeDamage(index, offset, "document does not end with a NUL byte; the tape is corrupt from here")


def _truncated(index: int, offset: int, buffer: bytes, pos: int) -> TapeDamage:
    left = len(buffer) - pos
    if left < 4:
        reason = f"{left} trailing bytes are too few for a document: the tape is truncated"
    else:
        declared = int.from_bytes(buffer[pos : pos + 4], "little", signed=True)
        reason = f"document declares {declared} bytes but only {left} remain: the tape is truncated"
    return TapeDamage(index, offset, reason)


SliceSpan = tuple[int, int, int, int]
"""A run of whole documents of a tape: (index of the first, its byte offset, bytes, documents)."""


def iter_slices(stream: BinaryIO, fmt: TapeFormat, documents: int) -> Iterator[SliceSpan | TapeDamage]:
    """The tape cut into slices of ``documents`` documents (the last may have fewer), then at most one damage
    report: the documents :func:`iter_spans` finds, a slice at a time. Cutting a BSON tape only reads each
    document's length prefix."""
    if fmt is TapeFormat.BSON:
        yield from _bson_slices(stream, documents)
        return
    first: Span | None = None
    count = end = 0
    for span in iter_spans(stream, fmt):
        if isinstance(span, TapeDamage):
            if first is not None:
                yield first[0], first[1], end - first[1], count
                first = None
            yield span
            return
        if first is None:
            first, count = span, 0
        count += 1
        end = span[1] + span[2]
        if count == documents:
            yield first[0], first[1], end - first[1], count
            first = None
    if first is not None:
        yield first[0], first[1], end - first[1], count


def _bson_slices(stream: BinaryIO, documents: int) -> Iterator[SliceSpan | TapeDamage]:
    length_at = struct.Struct("<i").unpack_from
    buffer = b""
    pos = 0  # of the next document in buffer
    index = offset = 0  # of the next document in the tape
    first = first_offset = count = 0  # of the slice being cut
    while True:
        size = len(buffer)
        while size - pos >= 4:
            (length,) = length_at(buffer, pos)
            if length < _MIN_DOC or length > MAX_DOCUMENT_BYTES:
                if count:
                    yield first, first_offset, offset - first_offset, count
                yield _bad_length(index, offset, length)
                return
            if size - pos < length:
                break
            if buffer[pos + length - 1] != 0:
                if count:
                    yield first, first_offset, offset - first_offset, count
                yield _no_nul(index, offset)
                return
            if not count:
                first, first_offset = index, offset
            pos += length
            offset += length
            index += 1
            count += 1
            if count == documents:
                yield first, first_offset, offset - first_offset, count
                count = 0
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        buffer = buffer[pos:] + chunk
        pos = 0
    if count:
        yield first, first_offset, offset - first_offset, count
    if len(buffer) > pos:
        yield _truncated(index, offset, buffer, pos)


def _iter_ndjson(
    stream: BinaryIO, index: int, offset: int, limit: int | None
) -> Iterator[RawDocument | TapeDamage]:
    read = 0
    for line in stream:
        if limit is not None and read >= limit:
            return
        read += len(line)
        data = line.rstrip(b"\r\n")
        if data.strip():
            yield RawDocument(index, offset, data, len(line))
            index += 1
        offset += len(line)


def loan_id_of(data: bytes, fmt: TapeFormat) -> str | None:
    """The ``loan_id`` of a raw document, found without decoding a BSON one; None if it has no string id."""
    if fmt is TapeFormat.BSON:
        return bson_string_field(data, b"loan_id")
    try:
        value = json.loads(data).get("loan_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def bson_loan_ids(data: bytes) -> Iterator[tuple[int, int, str | None]]:
    """(position, size, loan id) of each document of ``data``, which holds whole BSON documents back to back
    (a slice of a tape, as the read stage cut it), without copying a document out."""
    pos, end = 0, len(data)
    while pos < end:
        size = int.from_bytes(data[pos : pos + 4], "little")
        if size < _MIN_DOC or pos + size > end:
            raise ValueError(f"no whole BSON document at byte {pos} of the slice")
        yield pos, size, _usual_loan_id(data, pos, size)
        pos += size


_ID_STRING = b"\x02_id\x00"
_ID_OBJECT = b"\x07_id\x00"
_LOAN_ID = b"\x02loan_id\x00"


def _usual_loan_id(data: bytes, pos: int, size: int) -> str | None:
    """The loan id of the document at ``pos``, read straight where a tape usually has it: first, or right
    after an ``_id`` (a string, or an ObjectId as ``mongodump`` writes); anywhere else, found by walking the
    document's fields."""
    at = pos + 4
    if data.startswith(_ID_STRING, at):
        at += 9 + int.from_bytes(data[at + 5 : at + 9], "little")
    elif data.startswith(_ID_OBJECT, at):
        at += 17
    last = pos + size - 1  # the document's closing NUL
    if at + 13 <= last and data.startswith(_LOAN_ID, at):
        length = int.from_bytes(data[at + 9 : at + 13], "little")  # with its NUL
        if length > 0 and at + 13 + length <= last:
            try:
                return data[at + 13 : at + 12 + length].decode("utf-8")
            except UnicodeDecodeError:
                return None
    return bson_string_field(data, b"loan_id", pos)


def bson_string_field(doc: bytes, name: bytes, start: int = 0) -> str | None:
    """The value of a top-level string field of a raw BSON document (the one at ``start`` of ``doc``),
    without decoding the rest.

    Returns None when the field is missing or not a string, or the document is malformed. Used to find a
    loan's id cheaply.
    """
    try:
        return _string_field(doc, name, start)
    except (ValueError, IndexError):
        return None


def _string_field(doc: bytes, name: bytes, start: int) -> str | None:
    named = name + b"\x00"
    pos = start + 4
    end = start + int.from_bytes(doc[start : start + 4], "little") - 1
    while pos < end:
        kind = doc[pos]
        if doc.startswith(named, pos + 1):
            pos += 1 + len(named)
            if kind != 0x02:
                return None
            size = int.from_bytes(doc[pos : pos + 4], "little")  # int32 length (with the NUL), then the bytes
            if pos + 4 + size > end:
                return None  # it would run past its document
            try:
                return doc[pos + 4 : pos + 3 + size].decode("utf-8")
            except UnicodeDecodeError:
                return None
        pos = doc.index(b"\x00", pos + 1, end) + 1
        if kind == 0x02:
            pos += 4 + int.from_bytes(doc[pos : pos + 4], "little")
            continue
        size = _value_size(doc, kind, pos)
        if size < 0:
            return None
        pos += size
    return None


_FIXED = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16, 0x7F: 0, 0xFF: 0}


def _value_size(doc: bytes, kind: int, pos: int) -> int:
    fixed = _FIXED.get(kind)
    if fixed is not None:
        return fixed
    if kind in (0x03, 0x04, 0x0F):  # document, array, code with scope: int32 total length
        return int.from_bytes(doc[pos : pos + 4], "little")
    if kind in (0x02, 0x0D, 0x0E):  # string, code, symbol
        return 4 + int.from_bytes(doc[pos : pos + 4], "little")
    if kind == 0x05:  # binary: int32 length + subtype + bytes
        return 5 + int.from_bytes(doc[pos : pos + 4], "little")
    if kind == 0x0B:  # regex: two cstrings
        first = doc.index(b"\x00", pos)
        second = doc.index(b"\x00", first + 1)
        return second + 1 - pos
    if kind == 0x0C:  # DBPointer: string + 12 bytes
        return 4 + int.from_bytes(doc[pos : pos + 4], "little") + 12
    return -1
