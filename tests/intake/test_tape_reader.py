from __future__ import annotations

import io

import bson
from bson.decimal128 import Decimal128
from bson.objectid import ObjectId
from hypothesis import given
from hypothesis import strategies as st

from tranche.intake import tape as tape_module
from tranche.intake.parse import decimal128_to_decimal
from tranche.intake.tape import (
    RawDocument,
    TapeDamage,
    TapeFormat,
    bson_loan_ids,
    bson_string_field,
    iter_documents,
    iter_slices,
    iter_spans,
)

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.floats(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text("abc", max_size=3), children, max_size=3)
    ),
    max_leaves=8,
)
documents = st.lists(
    st.dictionaries(st.text("xyz_", min_size=1, max_size=5), values, max_size=5).map(
        lambda d: {**d, "loan_id": "L" + str(len(d))}
    ),
    min_size=1,
    max_size=8,
)


@given(documents, st.data())
def test_a_tape_cut_anywhere_yields_every_whole_document_before_the_cut(
    docs: list[dict[str, object]], data: st.DataObject
) -> None:
    encoded = [bson.encode(d) for d in docs]
    tape = b"".join(encoded)
    cut = data.draw(st.integers(0, len(tape)))
    out = list(iter_documents(io.BytesIO(tape[:cut]), TapeFormat.BSON))
    boundaries = [0]
    for e in encoded:
        boundaries.append(boundaries[-1] + len(e))
    whole = sum(1 for b in boundaries[1:] if b <= cut)
    read = [o for o in out if isinstance(o, RawDocument)]
    assert [r.data for r in read] == encoded[:whole]
    damaged = [o for o in out if isinstance(o, TapeDamage)]
    assert bool(damaged) == (cut not in boundaries)
    if damaged:
        assert damaged[0].index == whole and damaged[0].offset == boundaries[whole]


@given(documents, st.data(), st.integers(1, 4), st.sampled_from([5, 16, 64, 1 << 20]))
def test_slices_group_the_documents_and_the_damage_that_spans_find(
    docs: list[dict[str, object]], data: st.DataObject, per_slice: int, chunk: int
) -> None:
    tape = bytearray(b"".join(bson.encode(d) for d in docs))
    tape = tape[: data.draw(st.integers(0, len(tape)))]
    if tape and data.draw(st.booleans()):  # a corrupt byte anywhere
        tape[data.draw(st.integers(0, len(tape) - 1))] = data.draw(st.integers(0, 255))
    spans = list(iter_spans(io.BytesIO(bytes(tape)), TapeFormat.BSON))
    expected: list[object] = []
    whole = [s for s in spans if not isinstance(s, TapeDamage)]
    for start in range(0, len(whole), per_slice):
        group = whole[start : start + per_slice]
        first, offset, _size = group[0]
        last = group[-1]
        expected.append((first, offset, last[1] + last[2] - offset, len(group)))
    expected.extend(s for s in spans if isinstance(s, TapeDamage))
    original = tape_module._CHUNK
    tape_module._CHUNK = chunk  # documents straddle the reads
    try:
        assert list(iter_slices(io.BytesIO(bytes(tape)), TapeFormat.BSON, per_slice)) == expected
    finally:
        tape_module._CHUNK = original


ids = st.none() | st.text(max_size=12) | st.builds(ObjectId) | st.integers(0, 2**31)


@given(documents, st.lists(ids, min_size=8, max_size=8), st.data())
def test_a_slice_gives_each_documents_loan_id_wherever_it_lies(
    docs: list[dict[str, object]], leading: list[object], data: st.DataObject
) -> None:
    encoded = []
    for doc, first in zip(docs, leading, strict=False):
        if first is not None:
            doc = {"_id": first, **doc}  # as mongodump writes it, or not
        if data.draw(st.booleans()):
            doc = {**{k: v for k, v in doc.items() if k != "loan_id"}, "loan_id": doc["loan_id"]}
        encoded.append(bson.encode(doc))
    found = list(bson_loan_ids(b"".join(encoded)))
    assert [loan_id for _pos, _size, loan_id in found] == [bson_string_field(e, b"loan_id") for e in encoded]
    assert [loan_id for _pos, _size, loan_id in found] == [bson.decode(e)["loan_id"] for e in encoded]


@given(documents, ids, st.data())
def test_the_usual_place_of_a_loan_id_is_read_as_a_walk_would_read_it_even_in_a_corrupt_document(
    docs: list[dict[str, object]], first: object, data: st.DataObject
) -> None:
    doc = docs[0] if first is None else {"_id": first, **docs[0]}
    raw = bytearray(bson.encode(doc))
    for _ in range(data.draw(st.integers(0, 3))):
        raw[data.draw(st.integers(4, len(raw) - 1))] = data.draw(st.integers(0, 255))
    assert tape_module._usual_loan_id(bytes(raw), 0, len(raw)) == bson_string_field(bytes(raw), b"loan_id")


@given(documents)
def test_the_loan_id_is_found_without_decoding(docs: list[dict[str, object]]) -> None:
    for doc in docs:
        assert bson_string_field(bson.encode(doc), b"loan_id") == doc["loan_id"]


def test_a_corrupt_length_stops_the_tape_with_a_reason() -> None:
    tape = bson.encode({"loan_id": "a"}) + b"\x02\x00\x00\x00\x00"
    *_, damage = iter_documents(io.BytesIO(tape), TapeFormat.BSON)
    assert isinstance(damage, TapeDamage) and "not a valid BSON length" in damage.reason


@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=None)
    .filter(lambda d: len(d.as_tuple().digits) <= 34)
    .filter(lambda d: -6176 <= d.as_tuple().exponent <= 6111)
)
def test_fast_decimal128_conversion_agrees_with_pymongo(value: object) -> None:
    d128 = Decimal128(value)  # type: ignore[arg-type]
    assert str(decimal128_to_decimal(d128)) == str(d128.to_decimal())
