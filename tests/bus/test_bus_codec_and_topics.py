"""The event codec, topic matching and backend selection; pure, no servers."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tranche.bus import (
    CodecError,
    EventCodec,
    InProcessBus,
    UnknownEventTypeError,
    UnsupportedBusUrlError,
    connect,
)
from tranche.bus.codec import decode, encode, to_jsonable
from tranche.bus.topics import topic_matches
from tranche.shared.loan import Borrower, Loan, LoanStatus, Payment, ScheduleType


@dataclass(frozen=True, slots=True)
class Sample:
    amount: int
    rate: Decimal
    on: date
    at: datetime
    tags: tuple[str, ...]
    pairs: tuple[tuple[int, Decimal], ...]
    note: str | None = None


samples = st.builds(
    Sample,
    amount=st.integers(min_value=-(10**15), max_value=10**15),
    rate=st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-100, max_value=100),
    on=st.dates(),
    at=st.datetimes(timezones=st.just(UTC)),
    tags=st.lists(st.text(max_size=8), max_size=4).map(tuple),
    pairs=st.lists(
        st.tuples(st.integers(), st.decimals(allow_nan=False, allow_infinity=False, places=2)), max_size=3
    ).map(tuple),
    note=st.none() | st.text(max_size=10),
)


@given(samples)
def test_an_event_decodes_to_an_equal_event_with_exact_decimals(event: Sample) -> None:
    back = decode(Sample, encode(event))
    assert back == event
    assert all(isinstance(rate, Decimal) for _, rate in back.pairs)
    assert str(back.rate) == str(event.rate)


@given(samples)
def test_encoding_writes_exactly_what_the_general_conversion_makes(event: Sample) -> None:
    general = json.dumps(to_jsonable(event), separators=(",", ":"), ensure_ascii=False).encode()
    assert encode(event) == general
    # Keys JSON does not take (dates here) go the general way.
    assert (
        encode({event.on: event})
        == json.dumps(to_jsonable({event.on: event}), separators=(",", ":"), ensure_ascii=False).encode()
    )


def test_a_loan_with_enums_nested_records_and_optionals_round_trips() -> None:
    loan = Loan(
        lender_id="len1",
        loan_id="L1",
        status=LoanStatus.ACTIVE,
        currency="EUR",
        principal=500_000,
        outstanding_principal=420_000,
        interest_rate=Decimal("0.0890"),
        term_months=36,
        schedule_type=ScheduleType.ANNUITY,
        issue_date=date(2025, 6, 1),
        borrower=Borrower(
            country="EE", age=41, income_monthly=250_000, credit_score=710, extra={"k": [1, 2]}
        ),
        next_payment_date=None,
        payments=(Payment(date(2025, 7, 1), 12_000, 3_700),),
    )
    codec = EventCodec(Loan)
    message = codec.to_message(loan, "loan.L1.listed")
    assert message.type == "Loan"
    assert codec.from_message(message) == loan


def test_a_decimal_travels_as_a_string_never_a_float() -> None:
    assert b'"0.1"' in encode(
        Sample(1, Decimal("0.1"), date(2026, 1, 1), datetime(2026, 1, 1, tzinfo=UTC), (), ())
    )
    with pytest.raises(CodecError):
        decode(
            Sample,
            b'{"amount":1,"rate":0.1,"on":"2026-01-01","at":"2026-01-01T00:00:00+00:00",'
            b'"tags":[],"pairs":[]}',
        )


def test_an_unregistered_type_is_named_in_the_error() -> None:
    codec = EventCodec()
    with pytest.raises(UnknownEventTypeError) as raised:
        codec.to_message(Sample(1, Decimal(1), date(2026, 1, 1), datetime(2026, 1, 1, tzinfo=UTC), (), ()))
    assert raised.value.record == "Sample"


def test_two_event_types_of_one_name_are_refused() -> None:
    @dataclass(frozen=True)
    class Sample:
        x: int

    codec = EventCodec(globals()["Sample"])
    with pytest.raises(CodecError):
        codec.register(Sample)


def test_a_wrong_field_type_names_the_field() -> None:
    with pytest.raises(CodecError) as raised:
        decode(
            Sample,
            b'{"amount":"ten","rate":"1","on":"2026-01-01","at":"2026-01-01T00:00:00+00:00",'
            b'"tags":[],"pairs":[]}',
        )
    assert raised.value.field == "amount"


def _as_regex(pattern: str) -> re.Pattern[str]:
    # An independent reading of patterns made of literal words and "*", to check the matcher against.
    return re.compile(r"\.".join(r"[^.]+" if word == "*" else re.escape(word) for word in pattern.split(".")))


words = st.sampled_from(["loan", "L1", "L2", "listed", "withdrawn"])


@given(
    pattern=st.lists(st.one_of(words, st.sampled_from(["*"])), min_size=1, max_size=4).map(".".join),
    topic=st.lists(words, min_size=1, max_size=5).map(".".join),
)
def test_star_matches_exactly_one_word(pattern: str, topic: str) -> None:
    assert topic_matches(pattern, topic) == bool(_as_regex(pattern).fullmatch(topic))


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("loan.*.listed", "loan.L1.listed", True),
        ("loan.*.listed", "loan.L1.x.listed", False),
        ("loan.#", "loan", True),
        ("loan.#", "loan.L1.listed", True),
        ("#.listed", "loan.L1.listed", True),
        ("#", "anything.at.all", True),
        ("loan.#.listed", "loan.listed", True),
        ("loan.#.listed", "loan.L1.withdrawn", False),
    ],
)
def test_hash_matches_zero_or_more_words(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected


def test_a_pattern_with_a_wildcard_inside_a_word_is_refused() -> None:
    with pytest.raises(ValueError):
        topic_matches("loan.L*.listed", "loan.L1.listed")


def test_the_url_picks_the_backend() -> None:
    from tranche.bus.rabbit import RabbitBus

    assert isinstance(connect("memory://"), InProcessBus)
    assert isinstance(connect("amqp://guest:guest@127.0.0.1:5672/"), RabbitBus)
    with pytest.raises(UnsupportedBusUrlError):
        connect("kafka://localhost:9092")
