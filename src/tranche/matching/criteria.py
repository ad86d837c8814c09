"""What a buy offer asks of a loan, and the loan attributes it looks at.

Criteria are values: two buckets that ask the same thing have equal (and equally hashing) criteria, which is
what lets the order book serve all buy offers of one kind of demand from a single queue.
Ranges are inclusive at both ends; ``None`` means "no bound".
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class LoanTraits:
    """The attributes of a loan (and of its assessment) that criteria can look at."""

    country: str
    borrower_age: int
    credit_score: int
    income_monthly: int  # minor units of the loan's currency
    risk_group: str
    term_months: int
    lender_id: str


@dataclass(frozen=True, slots=True)
class Criteria:
    """One bucket's criteria over the loan and its assessment, and the minimum rate its investor accepts."""

    countries: frozenset[str] | None = None
    age_min: int | None = None
    age_max: int | None = None
    score_min: int | None = None
    score_max: int | None = None
    income_min: int | None = None
    risk_groups: frozenset[str] | None = None
    term_min: int | None = None
    term_max: int | None = None
    lenders_in: frozenset[str] | None = None
    lenders_not_in: frozenset[str] = frozenset()
    min_investor_rate: Decimal = Decimal(0)

    def accepts(self, t: LoanTraits) -> bool:
        """True when the loan's attributes satisfy every criterion; the rate is checked by the book."""
        if self.countries is not None and t.country not in self.countries:
            return False
        if self.age_min is not None and t.borrower_age < self.age_min:
            return False
        if self.age_max is not None and t.borrower_age > self.age_max:
            return False
        if self.score_min is not None and t.credit_score < self.score_min:
            return False
        if self.score_max is not None and t.credit_score > self.score_max:
            return False
        if self.income_min is not None and t.income_monthly < self.income_min:
            return False
        if self.risk_groups is not None and t.risk_group not in self.risk_groups:
            return False
        if self.term_min is not None and t.term_months < self.term_min:
            return False
        if self.term_max is not None and t.term_months > self.term_max:
            return False
        if self.lenders_in is not None and t.lender_id not in self.lenders_in:
            return False
        return t.lender_id not in self.lenders_not_in

    def accepts_rate(self, investor_rate: Decimal) -> bool:
        """True when the investor's rate on a loan is at least the minimum this bucket accepts."""
        return investor_rate >= self.min_investor_rate

    def boundaries(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """The points where this criteria's answer can change, per integer dimension (age, score, income, term).

        A range ``[lo, hi]`` changes its answer at ``lo`` and at ``hi + 1``; the book cuts each dimension at
        every boundary of every live criteria, so that all loans in one cell get the same answers.
        """

        def cut(lo: int | None, hi: int | None) -> tuple[int, ...]:
            points: list[int] = []
            if lo is not None:
                points.append(lo)
            if hi is not None:
                points.append(hi + 1)
            return tuple(points)

        return (
            cut(self.age_min, self.age_max),
            cut(self.score_min, self.score_max),
            cut(self.income_min, None),
            cut(self.term_min, self.term_max),
        )

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form (sorted lists, decimal strings) for storage."""
        return {
            "countries": None if self.countries is None else sorted(self.countries),
            "age_min": self.age_min,
            "age_max": self.age_max,
            "score_min": self.score_min,
            "score_max": self.score_max,
            "income_min": self.income_min,
            "risk_groups": None if self.risk_groups is None else sorted(self.risk_groups),
            "term_min": self.term_min,
            "term_max": self.term_max,
            "lenders_in": None if self.lenders_in is None else sorted(self.lenders_in),
            "lenders_not_in": sorted(self.lenders_not_in),
            "min_investor_rate": str(self.min_investor_rate),
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Criteria:
        """The inverse of :meth:`to_dict`."""

        def opt_set(key: str) -> frozenset[str] | None:
            value = data.get(key)
            if value is None:
                return None
            assert isinstance(value, list)
            return frozenset(str(v) for v in value)

        def opt_int(key: str) -> int | None:
            value = data.get(key)
            if value is None:
                return None
            assert isinstance(value, int)
            return value

        return cls(
            countries=opt_set("countries"),
            age_min=opt_int("age_min"),
            age_max=opt_int("age_max"),
            score_min=opt_int("score_min"),
            score_max=opt_int("score_max"),
            income_min=opt_int("income_min"),
            risk_groups=opt_set("risk_groups"),
            term_min=opt_int("term_min"),
            term_max=opt_int("term_max"),
            lenders_in=opt_set("lenders_in"),
            lenders_not_in=opt_set("lenders_not_in") or frozenset(),
            min_investor_rate=Decimal(str(data.get("min_investor_rate", "0"))),
        )
