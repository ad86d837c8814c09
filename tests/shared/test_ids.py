from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tranche.shared.errors import ValidationError
from tranche.shared.ids import ID_MAX_LENGTH, check_id, new_id


@pytest.mark.parametrize("value", ["acme", "iberia-credit", "pf_01hx3k", "a.b", "A1", "x" * ID_MAX_LENGTH])
def test_ordinary_identifiers_are_accepted(value: str) -> None:
    assert check_id(value, field="lender_id") == value


@pytest.mark.parametrize(
    "value", ["", ".", "..", "../etc", "a/b", "a\x00b", "-rf", "x" * (ID_MAX_LENGTH + 1), "naïve", "a b"]
)
def test_identifiers_that_could_escape_a_path_or_mislead_are_refused_naming_the_field(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        check_id(value, field="lender_id", kind="lender")
    assert refused.value.field == "lender_id"


def test_a_refused_identifier_is_echoed_only_as_a_short_prefix() -> None:
    with pytest.raises(ValidationError) as refused:
        check_id("y" * 10_000, field="lender_id")
    assert len(refused.value.message) < 200


def test_the_ids_tranche_makes_are_valid_identifiers() -> None:
    assert check_id(new_id("bat"), field="batch_id")


@given(st.text(max_size=80))
def test_an_accepted_identifier_is_a_single_safe_path_segment(value: str) -> None:
    try:
        check_id(value, field="id")
    except ValidationError:
        return
    assert "/" not in value and "\\" not in value and value not in {".", ".."} and value.isascii()
