"""The columns intake stores of a loan document are what the careful parser decides, whichever way they are
read: a document of the usual shape takes a short path that must agree with :func:`parse_loan` exactly."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import bson
from bson.decimal128 import Decimal128
from hypothesis import given
from hypothesis import strategies as st

from tranche.intake.parse import (
    BORROWER_FIELDS,
    KNOWN_FIELDS,
    FieldProblem,
    ParseOptions,
    _usual_columns,
    columns_of,
    content_hash,
    loan_columns,
    parse_loan,
)
from tranche.intake.tapegen import first_tape, make_loan
from tranche.shared.loan import Loan

DAY = date(2026, 11, 23)

# Every field the parser knows, an unknown one at each level, and the borrower's own.
FIELDS = [
    *sorted(KNOWN_FIELDS),
    "purpose",
    *(f"borrower.{name}" for name in sorted(BORROWER_FIELDS)),
    "borrower.employment",
]
MISSING = object()
VALUES: list[Any] = [
    MISSING,
    None,
    "",
    "   ",
    "x" * 129,
    "active",
    "repaid",
    "EUR",
    "JPY",
    "KWD",
    "XAU",
    "ES",
    "ZZ",
    "annuity",
    "12.34",
    "0.085",
    "2026-01-31",
    0,
    -1,
    1,
    17,
    18,
    120,
    121,
    600,
    601,
    1000,
    1001,
    2**63 - 1,
    True,
    False,
    3.5,
    0.1,
    Decimal128("0"),
    Decimal128("-0"),
    Decimal128("-1.00"),
    Decimal128("1"),
    Decimal128("1.005"),
    Decimal128("1E+3"),
    Decimal128("123456.78"),
    Decimal128("0.0850"),
    Decimal128("5.0000001"),
    Decimal128("5"),
    Decimal128("Infinity"),
    Decimal128("NaN"),
    Decimal128("1.5E-6170"),
    Decimal128("1E+6000"),
    Decimal128("1234567890123456789012345678901.00"),
    datetime(2020, 2, 29, tzinfo=UTC),
    datetime(2031, 1, 1, tzinfo=UTC),
    [],
    [{"date": datetime(2026, 11, 1, tzinfo=UTC), "principal": Decimal128("10.00"), "interest": "1.5"}],
    {"nested": [1, "two"]},
]

mutations = st.lists(st.tuples(st.sampled_from(FIELDS), st.sampled_from(VALUES)), max_size=4)


def _mutated(base: dict[str, Any], changes: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = {**base, "borrower": dict(base["borrower"])}
    for path, value in changes:
        target, name = (doc, path) if not path.startswith("borrower.") else (doc.get("borrower"), path[9:])
        if not isinstance(target, dict):
            continue
        if value is MISSING:
            target.pop(name, None)
        else:
            target[name] = value
    # As a tape brings it: encoded by the lender, decoded by intake.
    return bson.decode(bson.encode(doc))


def _careful(doc: dict[str, Any], options: ParseOptions) -> Any:
    loan = parse_loan("lender", doc, options)
    if isinstance(loan, list):
        return loan
    return columns_of(loan), content_hash(loan)


@given(st.integers(0, 10_000), mutations, st.booleans())
def test_the_short_path_never_decides_otherwise_than_the_careful_parser(
    seed: int, changes: list[tuple[str, Any]], doubles: bool
) -> None:
    doc = _mutated(make_loan(random.Random(seed), f"L-{seed}", DAY), changes)
    options = ParseOptions(allow_double_amounts=doubles)
    careful = _careful(doc, options)
    short = _usual_columns(doc)
    assert short is None or short == careful
    assert loan_columns("lender", doc, options) == careful


def test_a_generated_tape_takes_the_short_path() -> None:
    for doc in first_tape(200, "lender", 3, DAY):
        decoded = bson.decode(bson.encode(doc))
        assert _usual_columns(decoded) == _careful(decoded, ParseOptions())


def test_columns_keep_dates_as_iso_text_and_the_rate_as_sent() -> None:
    doc = bson.decode(bson.encode(make_loan(random.Random(1), "L-1", DAY)))
    doc["interest_rate"] = Decimal128("0.0850")
    found = loan_columns("lender", doc)
    assert not isinstance(found, list)
    columns, _digest = found
    loan = parse_loan("lender", doc)
    assert isinstance(loan, Loan)
    assert columns[4] == "0.0850" and loan.interest_rate == Decimal("0.085")
    assert columns[7] == loan.issue_date.isoformat()


def test_a_bad_document_gets_every_problem_by_field() -> None:
    doc = bson.decode(bson.encode(make_loan(random.Random(1), "L-1", DAY)))
    doc["principal"] = Decimal128("10.005")
    doc["borrower"]["age"] = 12
    found = loan_columns("lender", doc)
    assert isinstance(found, list)
    assert {p.field for p in found} == {"principal", "borrower.age"}
    assert all(isinstance(p, FieldProblem) and p.reason for p in found)


def test_an_amount_too_large_to_store_is_refused_by_name() -> None:
    doc = bson.decode(bson.encode(make_loan(random.Random(1), "L-1", DAY)))
    doc["borrower"]["income_monthly"] = Decimal128("1E+6000")
    found = loan_columns("lender", doc)
    assert isinstance(found, list)
    [problem] = found
    assert problem.field == "borrower.income_monthly" and "too large" in problem.reason
