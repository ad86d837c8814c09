from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tranche.shared.errors import ValidationError
from tranche.shared.money import MAX_MINOR, Money, currency_code, to_major


@pytest.mark.parametrize("value", ["1e30", "99999999999999999999.99", "-1e30"])
def test_an_amount_too_large_for_64_bit_minor_units_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="too large"):
        Money.parse(value, "EUR")


def test_the_largest_storable_amount_is_accepted() -> None:
    assert Money.parse(to_major(MAX_MINOR, "EUR"), "EUR").amount == MAX_MINOR


@pytest.mark.parametrize("value", ["eur", "EUR", " Eur "])
def test_a_currency_code_is_read_the_same_whatever_its_case(value: str) -> None:
    assert currency_code(value) == "EUR"


@pytest.mark.parametrize("value", ["EURO", "XAU", "", "€"])
def test_a_code_that_is_no_lendable_currency_is_refused_naming_the_field(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        currency_code(value, field="body.currency")
    assert refused.value.field == "body.currency"


@given(st.integers(-MAX_MINOR, MAX_MINOR))
def test_every_storable_amount_round_trips_through_its_major_units(amount: int) -> None:
    assert Money.parse(to_major(amount, "JPY"), "JPY").amount == amount
    assert Money.parse(Decimal(str(to_major(amount, "EUR"))), "EUR").amount == amount


@pytest.mark.parametrize("value", ["1e999999999", "-1e999999999"])
def test_an_amount_beyond_every_decimal_context_is_refused_as_too_large(value: str) -> None:
    with pytest.raises(ValidationError, match="too large"):
        Money.parse(value, "EUR")


@pytest.mark.parametrize("value", ["1e-999999999", "0.001", "12.505"])
def test_decimals_the_currency_does_not_have_are_refused_however_small(value: str) -> None:
    with pytest.raises(ValidationError, match="more decimals"):
        Money.parse(value, "EUR")
