"""From a decoded tape document to a validated :class:`Loan`, or the list of what is wrong with it.

Every problem names the field (dotted path, e.g. ``borrower.country``) and the reason; a document with
problems is rejected whole, its neighbours are not affected.

Amounts are read exactly: BSON Decimal128, a decimal string or an integer, in major units of the loan's
currency. More decimals than the currency has is an error, never rounded. A BSON double is an error unless
the lender's configuration allows doubles; then it is read by its shortest repr (``0.1`` → ``Decimal("0.1")``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Context, Decimal, InvalidOperation
from functools import cache
from operator import itemgetter
from typing import Any

import bson
from bson.decimal128 import Decimal128

from tranche.shared.loan import Borrower, Loan, LoanStatus, Payment, ScheduleType
from tranche.shared.money import is_currency, minor_exponent

KNOWN_FIELDS = frozenset(
    {
        "loan_id",
        "status",
        "currency",
        "principal",
        "outstanding_principal",
        "interest_rate",
        "term_months",
        "schedule_type",
        "issue_date",
        "next_payment_date",
        "all_or_nothing",
        "borrower",
        "payments",
    }
)
BORROWER_FIELDS = frozenset({"country", "age", "income_monthly", "credit_score"})
_STATUSES = {status.value: status for status in LoanStatus}
_SCHEDULES = {schedule.value: schedule for schedule in ScheduleType}
MAX_MINOR_UNITS = 2**63 - 1  # amounts are stored as 64-bit integers of minor units
MAX_RATE = Decimal(5)  # 500% a year: anything above is a unit mistake (percent sent as a fraction's number)


@dataclass(frozen=True, slots=True)
class FieldProblem:
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class ParseOptions:
    """What a lender's configuration changes about reading its tape."""

    allow_double_amounts: bool = False


@cache
def _countries() -> frozenset[str]:
    import pycountry

    return frozenset(c.alpha_2 for c in pycountry.countries)


class _Reader:
    """Collects problems while reading fields, so that one pass reports all of them."""

    __slots__ = ("options", "problems")

    def __init__(self, options: ParseOptions) -> None:
        self.options = options
        self.problems: list[FieldProblem] = []

    def fail(self, field: str, reason: str) -> None:
        self.problems.append(FieldProblem(field, reason))

    def string(self, doc: Mapping[str, Any], key: str, path: str, *, required: bool = True) -> str | None:
        value = doc.get(key)
        if value is None:
            if required:
                self.fail(path, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(path, f"must be a non-empty string, got {_describe(value)}")
            return None
        return value

    def integer(self, doc: Mapping[str, Any], key: str, path: str, low: int, high: int) -> int | None:
        value = doc.get(key)
        if value is None:
            self.fail(path, "is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer, got {_describe(value)}")
            return None
        if not low <= value <= high:
            self.fail(path, f"must be between {low} and {high}, got {value}")
            return None
        return value

    def decimal(
        self, doc: Mapping[str, Any], key: str, path: str, *, required: bool = True
    ) -> Decimal | None:
        value = doc.get(key)
        if value is None:
            if required:
                self.fail(path, "is required")
            return None
        if isinstance(value, Decimal128):
            result = decimal128_to_decimal(value)
        elif isinstance(value, str):
            try:
                result = Decimal(value.strip())
            except InvalidOperation:
                self.fail(path, f"{value!r} is not a decimal number")
                return None
        elif isinstance(value, bool):
            self.fail(path, f"must be a decimal number, got {_describe(value)}")
            return None
        elif isinstance(value, int):
            result = Decimal(value)
        elif isinstance(value, float):
            if not self.options.allow_double_amounts:
                self.fail(
                    path,
                    "is a BSON double; send Decimal128 or a decimal string (or allow doubles in the lender's configuration)",
                )
                return None
            result = Decimal(repr(value))
        else:
            self.fail(path, f"must be a decimal number, got {_describe(value)}")
            return None
        if not result.is_finite():
            self.fail(path, f"must be a finite number, got {result}")
            return None
        return result

    def amount(self, doc: Mapping[str, Any], key: str, path: str, currency: str | None) -> int | None:
        value = self.decimal(doc, key, path)
        if value is None or currency is None:
            return None
        if value < 0:
            self.fail(path, f"must not be negative, got {value}")
            return None
        exponent = minor_exponent(currency)
        scaled = value.scaleb(exponent)
        if scaled != scaled.to_integral_value():
            self.fail(path, f"{value} has more decimals than {currency} allows ({exponent})")
            return None
        if scaled > MAX_MINOR_UNITS:
            self.fail(path, f"{value} is too large: at most {MAX_MINOR_UNITS} minor units of {currency}")
            return None
        return int(scaled)

    def day(self, doc: Mapping[str, Any], key: str, path: str, *, required: bool = True) -> date | None:
        value = doc.get(key)
        if value is None:
            if required:
                self.fail(path, "is required")
            return None
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, str):
            try:
                return date.fromisoformat(value[:10]) if len(value) >= 10 else date.fromisoformat(value)
            except ValueError:
                self.fail(path, f"{value!r} is not an ISO date (YYYY-MM-DD)")
                return None
        self.fail(path, f"must be a date, got {_describe(value)}")
        return None


_COEFFICIENT_MASK = (1 << 49) - 1
_DECIMAL128_CONTEXT = Context(prec=34, Emax=6144, Emin=-6143)


def decimal128_to_decimal(value: Decimal128) -> Decimal:
    """Decimal128 → Decimal, several times faster than ``Decimal128.to_decimal`` for ordinary numbers.

    BSON stores IEEE 754-2008 decimal128 in the binary integer decimal encoding; ordinary finite numbers keep
    the coefficient in the low 113 bits and a biased exponent above it. Specials (NaN, infinity) and the
    rarely used large-coefficient form go through pymongo's own conversion.
    """
    hi, lo = value.__getstate__()  # the two 64-bit halves, as pickling takes them
    if (hi >> 61) & 3 == 3:
        return value.to_decimal()
    coefficient = ((hi & _COEFFICIENT_MASK) << 64) | lo
    exponent = ((hi >> 49) & 0x3FFF) - 6176
    number = Decimal(coefficient).scaleb(exponent, _DECIMAL128_CONTEXT)
    return number.copy_negate() if hi >> 63 else number


def _describe(value: Any) -> str:
    name = {
        float: "a double",
        bool: "a boolean",
        int: "an integer",
        str: "a string",
        list: "an array",
        dict: "a document",
    }
    return name.get(type(value), type(value).__name__)


def parse_loan(
    lender_id: str, doc: Mapping[str, Any], options: ParseOptions = ParseOptions()
) -> Loan | list[FieldProblem]:
    """Validate one decoded document; a Loan, or every problem found."""
    r = _Reader(options)
    loan_id = r.string(doc, "loan_id", "loan_id")
    if loan_id is not None and len(loan_id) > 128:
        r.fail("loan_id", "must be at most 128 characters")

    status: LoanStatus | None = None
    raw_status = r.string(doc, "status", "status")
    if raw_status is not None:
        status = _STATUSES.get(raw_status)
        if status is None:
            r.fail("status", f"{raw_status!r} is not one of {', '.join(s.value for s in LoanStatus)}")

    currency = r.string(doc, "currency", "currency")
    if currency is not None and not is_currency(currency):
        r.fail("currency", f"{currency!r} is not an ISO 4217 currency code")
        currency = None

    principal = r.amount(doc, "principal", "principal", currency)
    outstanding = r.amount(doc, "outstanding_principal", "outstanding_principal", currency)
    if principal is not None and outstanding is not None and principal == 0:
        r.fail("principal", "must be greater than zero")

    rate = r.decimal(doc, "interest_rate", "interest_rate")
    if rate is not None and not Decimal(0) <= rate <= MAX_RATE:
        r.fail(
            "interest_rate",
            f"must be an annual fraction between 0 and {MAX_RATE} (0.085 for 8.5%), got {rate}",
        )
        rate = None

    term = r.integer(doc, "term_months", "term_months", 1, 600)

    schedule: ScheduleType | None = None
    raw_schedule = r.string(doc, "schedule_type", "schedule_type")
    if raw_schedule is not None:
        schedule = _SCHEDULES.get(raw_schedule)
        if schedule is None:
            r.fail(
                "schedule_type", f"{raw_schedule!r} is not one of {', '.join(s.value for s in ScheduleType)}"
            )

    issue_date = r.day(doc, "issue_date", "issue_date")
    next_payment = r.day(doc, "next_payment_date", "next_payment_date", required=False)
    if issue_date is not None and next_payment is not None and next_payment < issue_date:
        r.fail("next_payment_date", "is before issue_date")

    aon = doc.get("all_or_nothing", False)
    if not isinstance(aon, bool):
        r.fail("all_or_nothing", f"must be a boolean, got {_describe(aon)}")
        aon = False

    borrower = _borrower(r, doc.get("borrower"), currency)
    payments = _payments(r, doc.get("payments"), currency)

    if r.problems:
        return r.problems
    assert loan_id and status and currency and schedule and issue_date and borrower is not None
    assert principal is not None and outstanding is not None and rate is not None and term is not None
    extra = {k: v for k, v in doc.items() if k not in KNOWN_FIELDS}
    return Loan(
        lender_id=lender_id,
        loan_id=loan_id,
        status=status,
        currency=currency,
        principal=principal,
        outstanding_principal=outstanding,
        interest_rate=rate,
        term_months=term,
        schedule_type=schedule,
        issue_date=issue_date,
        borrower=borrower,
        next_payment_date=next_payment,
        all_or_nothing=aon,
        payments=payments,
        extra=extra,
    )


Columns = tuple[Any, ...]
"""What intake stores of a valid loan, in the order of ``loan_versions``' columns from ``status`` to
``borrower_credit_score``, with dates as ISO text."""


def loan_columns(
    lender_id: str, doc: Mapping[str, Any], options: ParseOptions = ParseOptions()
) -> tuple[Columns, bytes] | list[FieldProblem]:
    """The stored columns of a document and its :func:`content_hash`, or every problem found: what
    :func:`parse_loan` decides, made without building a :class:`Loan` when the document has the usual shape
    (no payments, Decimal128 or integer amounts, BSON dates)."""
    usual = _usual_columns(doc)
    if usual is not None:
        return usual
    loan = parse_loan(lender_id, doc, options)
    if isinstance(loan, list):
        return loan
    return columns_of(loan), content_hash(loan)


def columns_of(loan: Loan) -> Columns:
    b = loan.borrower
    return (
        loan.status.value,
        loan.currency,
        loan.principal,
        loan.outstanding_principal,
        str(loan.interest_rate),
        loan.term_months,
        loan.schedule_type.value,
        loan.issue_date.isoformat(),
        loan.next_payment_date.isoformat() if loan.next_payment_date else None,
        loan.all_or_nothing,
        b.country,
        b.age,
        b.income_monthly,
        b.credit_score,
    )


def _usual_columns(doc: Mapping[str, Any]) -> tuple[Columns, bytes] | None:
    """:func:`loan_columns` of a document whose every field has its usual type and a valid value, read in as
    few steps as can be; None for any other document, which :func:`parse_loan` then reads with care. It
    must never accept what :func:`parse_loan` refuses, nor read a value differently (a property test holds
    the two together)."""
    get = doc.get
    loan_id, status, currency = get("loan_id"), get("status"), get("currency")
    term, schedule, aon = get("term_months"), get("schedule_type"), get("all_or_nothing", False)
    issued, due, borrower = get("issue_date"), get("next_payment_date"), get("borrower")
    if not (
        type(loan_id) is str
        and 0 < len(loan_id) <= 128
        and not loan_id.isspace()
        and type(status) is str
        and status in _STATUSES
        and type(currency) is str
        and is_currency(currency)
        and type(term) is int
        and 1 <= term <= 600
        and type(schedule) is str
        and schedule in _SCHEDULES
        and type(aon) is bool
        and type(issued) is datetime
        and (due is None or type(due) is datetime)
        and get("payments") is None
        and type(borrower) is dict
    ):
        return None
    country, age, score = borrower.get("country"), borrower.get("age"), borrower.get("credit_score")
    if not (
        type(country) is str
        and country in _countries()
        and type(age) is int
        and 18 <= age <= 120
        and type(score) is int
        and 0 <= score <= 1000
    ):
        return None
    exponent = minor_exponent(currency)
    principal = _usual_amount(get("principal"), exponent)
    outstanding = _usual_amount(get("outstanding_principal"), exponent)
    income = _usual_amount(borrower.get("income_monthly"), exponent)
    rate = _usual_rate(get("interest_rate"))
    if not principal or outstanding is None or income is None or rate is None:
        return None
    issue_date = issued.date()
    next_payment = None if due is None else due.date()
    if next_payment is not None and next_payment < issue_date:
        return None
    columns = (
        status,
        currency,
        principal,
        outstanding,
        rate[0],
        term,
        schedule,
        issue_date.isoformat(),
        None if next_payment is None else next_payment.isoformat(),
        aon,
        country,
        age,
        income,
        score,
    )
    known = (
        loan_id,
        status,
        currency,
        principal,
        outstanding,
        rate[1],
        term,
        schedule,
        issue_date.toordinal(),
        None if next_payment is None else next_payment.toordinal(),
        aon,
        country,
        age,
        income,
        score,
        (),
    )
    extra = {k: v for k, v in doc.items() if k not in KNOWN_FIELDS}
    borrower_extra = {k: v for k, v in borrower.items() if k not in BORROWER_FIELDS}
    return columns, _digest(known, extra, borrower_extra)


_EXACT_DIGITS = 10**28  # the default decimal context's precision: the careful path rounds beyond it


def _usual_amount(value: Any, exponent: int) -> int | None:
    """Minor units of a non-negative Decimal128 or integer amount with no more decimals than the currency's;
    None for anything else."""
    if type(value) is Decimal128:
        hi, lo = value.__getstate__()
        if hi >> 63 or (hi >> 61) & 3 == 3:  # negative, or a special or large-coefficient form
            return None
        coefficient = ((hi & _COEFFICIENT_MASK) << 64) | lo
        if coefficient >= _EXACT_DIGITS:
            return None
        shift = ((hi >> 49) & 0x3FFF) - 6176 + exponent
        if shift >= 0:
            minor = coefficient * 10**shift if shift < 40 else None
        else:
            minor, rest = divmod(coefficient, 10**-shift)
            if rest:
                return None
    elif type(value) is int and 0 <= value < _EXACT_DIGITS:
        minor = value * 10**exponent
    else:
        return None
    return int(minor) if minor is not None and minor <= MAX_MINOR_UNITS else None


_RATES: dict[tuple[int, int], tuple[str, str] | None] = {}


def _usual_rate(value: Any) -> tuple[str, str] | None:
    """A Decimal128 rate in range as (its text, its normalised text); None for anything else. Tapes repeat a
    few rates, so each is worked out once."""
    if type(value) is not Decimal128:
        return None
    halves = value.__getstate__()
    if halves in _RATES:
        return _RATES[halves]
    rate = decimal128_to_decimal(value)
    found = (str(rate), str(rate.normalize())) if rate.is_finite() and 0 <= rate <= MAX_RATE else None
    if len(_RATES) >= 4096:
        _RATES.clear()
    _RATES[halves] = found
    return found


def _borrower(r: _Reader, value: Any, currency: str | None) -> Borrower | None:
    if value is None:
        r.fail("borrower", "is required")
        return None
    if not isinstance(value, Mapping):
        r.fail("borrower", f"must be a document, got {_describe(value)}")
        return None
    country = r.string(value, "country", "borrower.country")
    if country is not None and country not in _countries():
        r.fail("borrower.country", f"{country!r} is not an ISO 3166-1 alpha-2 country code")
    age = r.integer(value, "age", "borrower.age", 18, 120)
    income = r.amount(value, "income_monthly", "borrower.income_monthly", currency)
    score = r.integer(value, "credit_score", "borrower.credit_score", 0, 1000)
    if country is None or age is None or income is None or score is None:
        return None
    extra = {k: v for k, v in value.items() if k not in BORROWER_FIELDS}
    return Borrower(country=country, age=age, income_monthly=income, credit_score=score, extra=extra)


def _payments(r: _Reader, value: Any, currency: str | None) -> tuple[Payment, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        r.fail("payments", f"must be an array, got {_describe(value)}")
        return ()
    payments = []
    for i, item in enumerate(value):
        path = f"payments.{i}"
        if not isinstance(item, Mapping):
            r.fail(path, f"must be a document, got {_describe(item)}")
            continue
        day = r.day(item, "date", f"{path}.date")
        principal = r.amount(item, "principal", f"{path}.principal", currency)
        interest = r.amount(item, "interest", f"{path}.interest", currency)
        if day is not None and principal is not None and interest is not None:
            payments.append(Payment(day, principal, interest))
    return tuple(payments)


def content_hash(loan: Loan) -> bytes:
    """A hash of the loan's meaning, not its bytes: the order of its fields and the formatting of its numbers
    (``"100.0"`` or ``Decimal128("100.00")``) do not change it. Unknown fields count by value, top-level keys
    in any order (inside a nested unknown document the order is the lender's and counts)."""
    b = loan.borrower
    return _digest(
        (
            loan.loan_id,
            loan.status.value,
            loan.currency,
            loan.principal,
            loan.outstanding_principal,
            str(loan.interest_rate.normalize()),
            loan.term_months,
            loan.schedule_type.value,
            loan.issue_date.toordinal(),
            loan.next_payment_date.toordinal() if loan.next_payment_date else None,
            loan.all_or_nothing,
            b.country,
            b.age,
            b.income_monthly,
            b.credit_score,
            tuple((p.date.toordinal(), p.principal, p.interest) for p in loan.payments),
        ),
        loan.extra,
        b.extra,
    )


def _digest(known: tuple[Any, ...], extra: dict[str, Any], borrower_extra: dict[str, Any]) -> bytes:
    digest = hashlib.blake2b(repr(known).encode(), digest_size=16)
    if extra or borrower_extra:
        first = itemgetter(0)
        digest.update(
            bson.encode(
                {"x": sorted(extra.items(), key=first), "b": sorted(borrower_extra.items(), key=first)}
            )
        )
    return digest.digest()
