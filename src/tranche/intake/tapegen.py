"""Realistic synthetic loan tapes, seeded, for demos, tests and benchmarks.

A first tape lists ``n`` loans. A next tape is made from a previous one, read as a stream: a share of the
loans changed (a payment was received, the outstanding principal fell), repaid, or sent invalid, plus new
loans; the rest are sent again unchanged. The same seed gives the same bytes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import bson
from bson.decimal128 import Decimal128

from tranche.intake.tape import RawDocument, TapeFormat, iter_documents

MARKETS: list[tuple[str, str, int]] = [  # country, currency, weight
    ("ES", "EUR", 30),
    ("DE", "EUR", 15),
    ("FR", "EUR", 10),
    ("IT", "EUR", 8),
    ("PT", "EUR", 5),
    ("NL", "EUR", 5),
    ("FI", "EUR", 4),
    ("EE", "EUR", 4),
    ("LV", "EUR", 4),
    ("LT", "EUR", 5),
    ("PL", "PLN", 10),
]
_COUNTRIES = [m[0] for m in MARKETS]
_CURRENCY = {m[0]: m[1] for m in MARKETS}
_WEIGHTS = [m[2] for m in MARKETS]
_PURPOSES = ["car", "home_improvement", "consolidation", "education", "medical", "travel", "business"]


@dataclass(frozen=True, slots=True)
class NextTapeShares:
    changed: float = 0.10
    repaid: float = 0.02
    invalid: float = 0.0
    new: int = 0


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year = day.year + month // 12
    month = month % 12 + 1
    return date(year, month, min(day.day, 28))


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _money(minor: int) -> Decimal128:
    return Decimal128(Decimal(minor).scaleb(-2))


def make_loan(rng: random.Random, loan_id: str, today: date) -> dict[str, Any]:
    country = rng.choices(_COUNTRIES, _WEIGHTS)[0]
    score = int(min(850, max(300, rng.gauss(650, 90))))
    rate = Decimal(max(30, min(350, int(40 + (850 - score) * 0.45 + rng.randint(-20, 20))))).scaleb(-3)
    term = rng.choice([6, 12, 18, 24, 36, 48, 60, 72, 84])
    principal = rng.randrange(500, 50_000) * 100
    schedule = rng.choices(["annuity", "linear", "bullet"], [70, 20, 10])[0]
    issued = _add_months(today, -rng.randrange(0, min(term, 30)))
    issued = date(issued.year, issued.month, rng.randint(1, 28))
    elapsed = max(0, (today.year - issued.year) * 12 + today.month - issued.month)
    remaining = max(term - elapsed, 1)
    outstanding = principal if schedule == "bullet" else principal * remaining // term
    return {
        "_id": loan_id,
        "loan_id": loan_id,
        "status": "active",
        "currency": _CURRENCY[country],
        "principal": _money(principal),
        "outstanding_principal": _money(outstanding),
        "interest_rate": Decimal128(rate),
        "term_months": term,
        "schedule_type": schedule,
        "issue_date": _midnight(issued),
        "next_payment_date": _midnight(_add_months(issued, elapsed + 1)),
        "all_or_nothing": rng.random() < 0.15,
        "borrower": {
            "country": country,
            "age": rng.randint(19, 72),
            "income_monthly": _money(rng.randrange(700, 9000) * 100),
            "credit_score": score,
            "employment": rng.choice(["salaried", "self_employed", "retired", "contract"]),
        },
        "purpose": rng.choice(_PURPOSES),
    }


def first_tape(n: int, lender_id: str, seed: int, today: date) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(n):
        yield make_loan(rng, f"{lender_id}-{i:08d}", today)


def next_tape(
    previous: BinaryIO, lender_id: str, seed: int, today: date, shares: NextTapeShares
) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    count = 0
    for raw in iter_documents(previous, TapeFormat.BSON):
        if not isinstance(raw, RawDocument):
            break
        count += 1
        loan = bson.decode(raw.data)
        if loan.get("status") != "active":
            continue  # a loan that left active is not sent again
        roll = rng.random()
        if roll < shares.repaid:
            loan["status"] = "repaid"
            loan["outstanding_principal"] = _money(0)
        elif roll < shares.repaid + shares.changed:
            outstanding = int(loan["outstanding_principal"].to_decimal().scaleb(2))
            paid = min(outstanding, max(100, outstanding // max(1, loan["term_months"] // 2)))
            interest = int(Decimal(outstanding) * loan["interest_rate"].to_decimal() / 12)
            loan["outstanding_principal"] = _money(outstanding - paid)
            if outstanding - paid == 0:
                loan["status"] = "repaid"
            due = loan["next_payment_date"].date()
            loan["payments"] = [
                {"date": _midnight(due), "principal": _money(paid), "interest": _money(interest)}
            ]
            loan["next_payment_date"] = _midnight(_add_months(due, 1))
        elif roll < shares.repaid + shares.changed + shares.invalid:
            _spoil(rng, loan)
        yield loan
    for i in range(shares.new):
        yield make_loan(rng, f"{lender_id}-{seed:04d}-{i:06d}", today)


def _spoil(rng: random.Random, loan: dict[str, Any]) -> None:
    """Make one typical mistake in a loan document."""
    mistake = rng.randrange(5)
    if mistake == 0:
        del loan["currency"]
    elif mistake == 1:
        loan["outstanding_principal"] = float(loan["outstanding_principal"].to_decimal())
    elif mistake == 2:
        loan["borrower"]["country"] = "XX"
    elif mistake == 3:
        loan["principal"] = "-" + str(loan["principal"].to_decimal())
    else:
        loan["outstanding_principal"] = str(loan["outstanding_principal"].to_decimal()) + "5"


def write_tape(docs: Iterator[dict[str, Any]], out: Path, *, corrupt_tail: bool = False) -> int:
    """Write documents as BSON back to back (as mongodump does); returns how many."""
    count = 0
    with out.open("wb") as file:
        for doc in docs:
            file.write(bson.encode(doc))
            count += 1
        if corrupt_tail:
            file.write(bson.encode({"loan_id": "truncated", "status": "active"})[:-7])
    return count
