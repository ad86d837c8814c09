from __future__ import annotations

import io

import bson
from bson.decimal128 import Decimal128
from hypothesis import given
from hypothesis import strategies as st

from tranche.intake.parse import decimal128_to_decimal
from tranche.intake.tape import RawDocument, TapeDamage, TapeFormat, bson_string_field, iter_documents

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
