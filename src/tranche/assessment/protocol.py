"""The cash-flow service's wire protocol (JSON over HTTP), shared by the service and its client.

``POST /v1/projections`` projects a batch::

    request   {"loans": [LOAN, ...]}
    response  200 {"results": [RESULT, ...]}          one result per loan, in order
    LOAN      {"lender_id": "l1", "loan_id": "x", "currency": "EUR", "outstanding_principal": 100000,
               "interest_rate": "0.12", "term_months": 36, "schedule_type": "annuity",
               "issue_date": "2026-01-15", "next_payment_date": "2026-02-15"}
    RESULT    {"status": 200, "projection": {"lender_id": ..., "loan_id": ..., "currency": ...,
               "schedule_type": ..., "first_date": "2026-02-15" | null, "principal": [..], "interest": [..]}}
            | {"status": 400, "lender_id": ..., "loan_id": ..., "message": "...", "field": "interest_rate"}

A loan the service cannot project gets a per-loan 400 with the reason; its neighbours are projected. A request
that is not a batch at all is a 400 for the whole call. Amounts are integer minor units; the rate is a decimal
string, never a JSON number, so that no float ever carries it. ``POST /v1/projection`` takes one LOAN and
answers 200 with a projection or 400 with ``{"message", "field"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from tranche.assessment.errors import LoanError
from tranche.assessment.projection import CashflowTerms, Projection
from tranche.shared.loan import ScheduleType

__all__ = [
    "LoanTerms",
    "decode_loan",
    "decode_projection",
    "encode_error",
    "encode_loan",
    "encode_projection",
]


@dataclass(frozen=True, slots=True)
class LoanTerms:
    """The part of a loan a projection reads, as it travels to the cash-flow service."""

    lender_id: str
    loan_id: str
    currency: str
    outstanding_principal: int
    interest_rate: Decimal
    term_months: int
    schedule_type: ScheduleType
    issue_date: date
    next_payment_date: date | None


def encode_loan(loan: CashflowTerms) -> dict[str, Any]:
    return {
        "lender_id": loan.lender_id,
        "loan_id": loan.loan_id,
        "currency": loan.currency,
        "outstanding_principal": loan.outstanding_principal,
        "interest_rate": str(loan.interest_rate),
        "term_months": loan.term_months,
        "schedule_type": loan.schedule_type.value,
        "issue_date": loan.issue_date.isoformat(),
        "next_payment_date": loan.next_payment_date.isoformat() if loan.next_payment_date else None,
    }


_SCHEDULES = {t.value: t for t in ScheduleType}


class _Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _text(document: dict[str, Any], name: str, low: int, high: int) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise _Invalid(name, f"{name} must be a text of {low} to {high} characters")
    return value


def _integer(document: dict[str, Any], name: str) -> int:
    value = document.get(name)
    if type(value) is not int:
        raise _Invalid(name, f"{name} must be an integer")
    return value


def _date(document: dict[str, Any], name: str, required: bool = True) -> date | None:
    value = document.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise _Invalid(name, f"{name} must be a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _Invalid(name, f"{name} {value!r} is not a date as YYYY-MM-DD") from None


def decode_loan(document: Any) -> LoanTerms | LoanError:
    """A LOAN from the wire, or the per-loan error that names what is wrong with it."""
    if not isinstance(document, dict):
        return LoanError("a loan must be a JSON object", lender_id="?", loan_id="?", field="loan")
    lender_id = str(document.get("lender_id", "?"))
    loan_id = str(document.get("loan_id", "?"))
    try:
        rate = document.get("interest_rate")
        if not isinstance(rate, str):
            raise _Invalid("interest_rate", 'interest_rate must be a decimal string such as "0.12"')
        try:
            interest_rate = Decimal(rate)
        except InvalidOperation:
            raise _Invalid("interest_rate", f"interest_rate {rate!r} is not a decimal") from None
        schedule = _SCHEDULES.get(document.get("schedule_type"))  # type: ignore[arg-type]
        if schedule is None:
            raise _Invalid("schedule_type", f"schedule_type must be one of {', '.join(_SCHEDULES)}")
        issued = _date(document, "issue_date")
        if issued is None:  # unreachable: a required date is never None; keeps the type exact
            raise _Invalid("issue_date", "issue_date is required")
        return LoanTerms(
            _text(document, "lender_id", 1, 64),
            _text(document, "loan_id", 1, 128),
            _text(document, "currency", 3, 3),
            _integer(document, "outstanding_principal"),
            interest_rate,
            _integer(document, "term_months"),
            schedule,
            issued,
            _date(document, "next_payment_date", required=False),
        )
    except _Invalid as invalid:
        return LoanError(invalid.message, lender_id=lender_id, loan_id=loan_id, field=invalid.field)


def encode_projection(projection: Projection) -> dict[str, Any]:
    return {
        "status": 200,
        "projection": {
            "lender_id": projection.lender_id,
            "loan_id": projection.loan_id,
            "currency": projection.currency,
            "schedule_type": projection.schedule_type.value,
            "first_date": projection.first_date.isoformat() if projection.first_date else None,
            "principal": projection.principal,
            "interest": projection.interest,
        },
    }


def encode_error(error: LoanError) -> dict[str, Any]:
    return {
        "status": 400,
        "lender_id": error.lender_id,
        "loan_id": error.loan_id,
        "message": error.message,
        "field": error.field,
    }


def _amounts(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or any(type(amount) is not int for amount in value):
        raise ValueError(f"malformed projection: {name} must be a list of integers")
    return tuple(value)


def decode_projection(document: Any) -> Projection:
    """A projection from the wire; raises ``ValueError`` if it breaks the protocol."""
    if not isinstance(document, dict):
        raise ValueError("malformed projection: not an object")
    principal = _amounts(document.get("principal"), "principal")
    interest = _amounts(document.get("interest"), "interest")
    if len(principal) != len(interest):
        raise ValueError("malformed projection: principal and interest differ in length")
    schedule = _SCHEDULES.get(document.get("schedule_type"))  # type: ignore[arg-type]
    first = document.get("first_date")
    names = (document.get("lender_id"), document.get("loan_id"), document.get("currency"))
    if schedule is None or not all(isinstance(n, str) for n in names) or not isinstance(first, str | None):
        raise ValueError("malformed projection: lender_id, loan_id, currency, schedule_type or first_date")
    try:
        first_date = date.fromisoformat(first) if first is not None else None
    except ValueError:
        raise ValueError(f"malformed projection: first_date {first!r}") from None
    return Projection(str(names[0]), str(names[1]), str(names[2]), schedule, first_date, principal, interest)
