"""Cash-flow projection of annuity, linear and bullet loans, in integer minor units. Pure: no I/O, no clock.

The schedule
------------
A loan has ``n`` monthly payments left (see :func:`remaining_term`), the first on its ``next_payment_date``
and each later one on the same day of the following months (clamped to the month's last day). The monthly
rate is the annual nominal rate divided by twelve. Per period, of the outstanding principal ``P``:

- **annuity**: a constant instalment; the principal repaid after ``k`` periods is
  ``P * (q**k - 1) / (q**n - 1)`` with ``q = 1 + rate / 12`` (``P * k / n`` at a zero rate);
- **linear**: the same principal every period, ``P * k / n`` after ``k`` periods;
- **bullet**: interest only, the whole principal in the last period;
- interest of period ``k`` is the monthly rate on the principal still owed after period ``k - 1``.

Rounding
--------
Each period's principal (and interest) is the difference of the *cumulative* exact amounts rounded to the
minor unit (half to even). So every period is within one minor unit of the exact schedule, no rounding
error piles up over a long schedule, the last period takes whatever remains and the principal sums exactly
to the outstanding principal; the total interest is the exact total rounded once. An annuity's instalment may
therefore differ by a minor unit or two from one period to the next.

Speed
-----
:func:`project_many` projects a slice of loans at once with numpy: loans are sorted by remaining term and
cut into blocks of at most :data:`BLOCK_CELLS` periods, and every block is a handful of array operations.
The arithmetic is float64 on ratios (powers of ``q``, fractions of the principal); amounts leave it as
integers. Only additions, multiplications, divisions and ``rint`` are used, all correctly rounded in IEEE
754, so the result does not depend on the machine's vector unit. The relative error grows with the term (about
``term * 2**-53``), so loans of up to :data:`MAX_PRINCIPAL` minor units and :data:`MAX_TERM` months keep it
below a hundredth of a minor unit; larger ones are refused as a :class:`~tranche.assessment.errors.LoanError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from tranche.assessment.errors import LoanError
from tranche.shared.loan import ScheduleType

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "BLOCK_CELLS",
    "MAX_PRINCIPAL",
    "MAX_RATE",
    "MAX_TERM",
    "NOTHING_OWED",
    "CashflowTerms",
    "Period",
    "Projection",
    "Totals",
    "Work",
    "add_months",
    "out_of_range",
    "periods_left",
    "project",
    "project_many",
    "project_totals",
    "projectable",
    "remaining_term",
    "schedule_kind",
    "why_not",
]

MAX_PRINCIPAL = 10**12
"""Largest outstanding principal in minor units (10 billion EUR) projected within the float error budget."""
MAX_RATE = Decimal(10)
"""Largest annual nominal rate (1000%) accepted; beyond it powers of the monthly factor leave float range."""
MAX_TERM = 1200
"""Largest remaining term in months (a hundred years)."""
BLOCK_CELLS = 1 << 16
"""Periods per numpy block: bounds memory at a few MB whatever the mix of terms in a slice."""


class CashflowTerms(Protocol):
    """What a projection reads of a loan: :class:`tranche.shared.loan.Loan` has it all, and so does
    :class:`tranche.assessment.protocol.LoanTerms`, the loan as the cash-flow service receives it."""

    @property
    def lender_id(self) -> str: ...
    @property
    def loan_id(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def outstanding_principal(self) -> int: ...
    @property
    def interest_rate(self) -> Decimal: ...
    @property
    def term_months(self) -> int: ...
    @property
    def schedule_type(self) -> ScheduleType: ...
    @property
    def issue_date(self) -> date: ...
    @property
    def next_payment_date(self) -> date | None: ...


_KIND: dict[str, int] = {ScheduleType.ANNUITY: 0, ScheduleType.LINEAR: 1, ScheduleType.BULLET: 2}


_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def add_months(start: date, months: int, day: int | None = None) -> date:
    """``start`` moved by ``months`` calendar months, on ``day`` (default ``start.day``) or the month's last
    day if the month is shorter."""
    years, month0 = divmod(start.month - 1 + months, 12)
    year = start.year + years
    wanted = day or start.day
    if wanted > 28:
        last = _MONTH_DAYS[month0]
        if month0 == 1 and (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
            last = 29
        wanted = min(wanted, last)
    return date(year, month0 + 1, wanted)


def remaining_term(loan: CashflowTerms) -> int:
    """Monthly payments left, from the first one on ``next_payment_date`` through maturity.

    Payment ``j`` of a loan falls in the ``j``-th calendar month after the issue month (``j = 1 ..
    term_months``), so the next payment is number ``j = months(issue_date -> next_payment_date)``, counting
    calendar months and ignoring the day, and ``term_months - j + 1`` payments remain. A next payment in the
    issue month counts as the first (all ``term_months`` remain); one after maturity (a late loan) leaves a
    single payment, of everything outstanding, on that date.
    """
    if loan.next_payment_date is None:
        raise ValueError("a loan without a next payment date has no remaining term")
    nxt, issued = loan.next_payment_date, loan.issue_date
    number = (nxt.year - issued.year) * 12 + nxt.month - issued.month
    return min(max(loan.term_months - number + 1, 1), loan.term_months)


@dataclass(frozen=True, slots=True)
class Period:
    """One payment of a schedule: its number (1 = next payment), due date and amounts in minor units."""

    number: int
    date: date
    principal: int
    interest: int

    @property
    def payment(self) -> int:
        return self.principal + self.interest


@dataclass(frozen=True, slots=True)
class Projection:
    """A loan's projected payments from its next payment to maturity, kept as columns for speed.

    ``principal[k]`` and ``interest[k]`` are period ``k + 1``'s amounts in minor units of ``currency``;
    ``first_date`` is the next payment date (None only for a loan with nothing outstanding and no date).
    """

    lender_id: str
    loan_id: str
    currency: str
    schedule_type: ScheduleType
    first_date: date | None
    principal: tuple[int, ...]
    interest: tuple[int, ...]

    @property
    def periods_count(self) -> int:
        return len(self.principal)

    @property
    def total_principal(self) -> int:
        return sum(self.principal)

    @property
    def total_interest(self) -> int:
        return sum(self.interest)

    @property
    def next_payment(self) -> int:
        """The amount due on the next payment date (0 if nothing is outstanding)."""
        return self.principal[0] + self.interest[0] if self.principal else 0

    def dates(self) -> list[date]:
        """Due dates of every period, in order."""
        if self.first_date is None:
            return []
        first = self.first_date
        return [add_months(first, k) for k in range(len(self.principal))]

    @property
    def maturity_date(self) -> date | None:
        """Due date of the last period."""
        if self.first_date is None or not self.principal:
            return self.first_date
        return add_months(self.first_date, len(self.principal) - 1)

    def periods(self) -> Iterator[Period]:
        """Every period as a :class:`Period`; built on demand (a projection holds only columns)."""
        for number, (due, principal, interest) in enumerate(
            zip(self.dates(), self.principal, self.interest, strict=True), start=1
        ):
            yield Period(number, due, principal, interest)


def project(loan: CashflowTerms) -> Projection:
    """The projection of one loan; raises :class:`LoanError` if it cannot be projected."""
    result = project_many([loan])[0]
    if isinstance(result, LoanError):
        raise result
    return result


_MAX_RATE_FLOAT = float(MAX_RATE)
_PADDING_CELLS = 4096

Work = tuple[int, int, int, int, float]
"""(kind, periods left, position, outstanding principal, annual rate) of a loan that goes through numpy."""


@dataclass(frozen=True, slots=True)
class Totals:
    """What an assessment keeps of a projection: the number of periods, the amount due on the next payment
    date and the total interest, exactly as the whole :class:`Projection` of the same loan sums them."""

    periods: int
    next_payment: int
    total_interest: int


NOTHING_OWED = Totals(0, 0, 0)


def schedule_kind(schedule_type: str) -> int | None:
    """The projection's code for a schedule type (``"annuity"`` or :class:`ScheduleType`); None if unknown."""
    return _KIND.get(schedule_type)


def projectable(kind: int | None, outstanding: int, rate: float, term: int) -> bool:
    """Whether a loan with principal outstanding is within what :func:`project_many` projects (its schedule
    type known, its principal, rate and term in range); the reason it is not is :func:`why_not`'s."""
    return (
        kind is not None
        and 0 < outstanding <= MAX_PRINCIPAL
        and 0.0 <= rate <= _MAX_RATE_FLOAT  # NaN and infinities fail this test
        and 1 <= term <= MAX_TERM
    )


def periods_left(term: int, issued_year: int, issued_month: int, next_year: int, next_month: int) -> int:
    """:func:`remaining_term` from the years and months of the issue and next payment dates."""
    left = term - (next_year - issued_year) * 12 - next_month + issued_month + 1
    return 1 if left < 1 else term if left > term else left


def project_many(loans: Sequence[CashflowTerms]) -> list[Projection | LoanError]:
    """Project a slice of loans; each result is in its loan's position, a :class:`LoanError` for a loan
    that cannot be projected (its neighbours are unaffected)."""
    results: list[Projection | LoanError | None] = [None] * len(loans)
    work: list[Work] = []
    kinds = _KIND
    for position, loan in enumerate(loans):
        outstanding = loan.outstanding_principal
        if outstanding == 0:
            results[position] = Projection(
                loan.lender_id,
                loan.loan_id,
                loan.currency,
                loan.schedule_type,
                loan.next_payment_date,
                (),
                (),
            )
            continue
        kind = kinds.get(loan.schedule_type)
        nxt = loan.next_payment_date
        term = loan.term_months
        rate = float(loan.interest_rate)
        if nxt is None or not projectable(kind, outstanding, rate, term):
            results[position] = why_not(loan)
            continue
        assert kind is not None
        issued = loan.issue_date
        left = periods_left(term, issued.year, issued.month, nxt.year, nxt.month)
        work.append((kind, left, position, outstanding, rate))
    work.sort()
    for block in _blocks(work):
        principal_flat, interest_flat, finite = _schedules(*_cumulative(block))
        offset = 0
        for (_, term, position, _, _), ok in zip(block, finite, strict=True):
            loan = loans[position]
            end = offset + term
            if ok:
                results[position] = Projection(
                    loan.lender_id,
                    loan.loan_id,
                    loan.currency,
                    loan.schedule_type,
                    loan.next_payment_date,
                    tuple(principal_flat[offset:end]),
                    tuple(interest_flat[offset:end]),
                )
            else:
                results[position] = out_of_range(loan, term)
            offset = end
    return [r for r in results if r is not None]


def project_totals(work: Sequence[Work]) -> dict[int, Totals | None]:
    """The :class:`Totals` of loans given as :data:`Work` (each :func:`projectable`, with principal
    outstanding), by their position; None for a loan whose interest leaves the representable range (see
    :func:`out_of_range`). The same arithmetic as :func:`project_many`, without making the schedules."""
    import numpy as np

    found: dict[int, Totals | None] = {}
    for block in _blocks(sorted(work)):
        cumulative_principal, cumulative_interest, n = _cumulative(block)
        columns = np.arange(len(block))
        last = n - 1
        first_principal = cumulative_principal[0].tolist()
        first_interest = cumulative_interest[0].tolist()
        totals = cumulative_interest[last, columns].tolist()
        for (_, term, position, _, _), p, i, total in zip(
            block, first_principal, first_interest, totals, strict=True
        ):
            found[position] = Totals(term, int(p) + int(i), int(total)) if math.isfinite(total) else None
    return found


def why_not(loan: CashflowTerms) -> LoanError:
    """The reason a loan with principal outstanding cannot be projected (called only once it failed)."""
    message, field = "cannot be projected", "loan"
    rate = loan.interest_rate
    if loan.schedule_type not in _KIND:
        message, field = f"unknown schedule type {loan.schedule_type!r}", "schedule_type"
    elif not 0 < loan.outstanding_principal <= MAX_PRINCIPAL:
        message = f"outstanding principal {loan.outstanding_principal} is not in 1 .. {MAX_PRINCIPAL}"
        field = "outstanding_principal"
    elif not (rate.is_finite() and 0 <= rate <= MAX_RATE):
        message, field = f"interest rate {rate} is not in 0 .. {MAX_RATE}", "interest_rate"
    elif not 1 <= loan.term_months <= MAX_TERM:
        message, field = f"term of {loan.term_months} months is not in 1 .. {MAX_TERM}", "term_months"
    elif loan.next_payment_date is None:
        message = "a loan with principal outstanding needs a next payment date"
        field = "next_payment_date"
    return LoanError(message, lender_id=loan.lender_id, loan_id=loan.loan_id, field=field)


def out_of_range(loan: CashflowTerms, periods: int) -> LoanError:
    """The error of a loan whose interest over ``periods`` leaves float range (see :func:`project_totals`)."""
    return LoanError(
        f"interest over {periods} months at {loan.interest_rate} leaves the representable range",
        lender_id=loan.lender_id,
        loan_id=loan.loan_id,
        field="interest_rate",
    )


def _blocks(work: list[Work]) -> Iterator[list[Work]]:
    """``work`` (sorted) cut into blocks of one schedule type and similar terms, which keep the padding (and the
    formulas computed) small. A block costs a fixed overhead (some twenty numpy calls) plus its cells,
    padding included: a loan joins the block while the padding stays under the overhead's worth of cells or
    a quarter of the block."""
    start = 0
    while start < len(work):
        kind, cells = work[start][0], work[start][1]
        end = start + 1
        while end < len(work):
            next_kind, next_term = work[end][0], work[end][1]
            width = (end - start + 1) * next_term
            cells += next_term
            if next_kind != kind or width > BLOCK_CELLS or width - cells > max(_PADDING_CELLS, cells >> 2):
                break
            end += 1
        yield work[start:end]
        start = end


def _per_period(cumulative: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Amounts per period from running totals (periods by loans), turned to loans by periods."""
    import numpy as np

    amounts = cumulative.astype(np.int64)
    amounts[1:] -= amounts[:-1].copy()
    return np.ascontiguousarray(amounts.T)


def _cumulative(
    block: list[Work],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """The running totals of principal and of interest (one row per period, one column per loan) of a block
    of one schedule type, sorted by term, and each loan's number of periods."""
    # numpy is imported where it is used: a process that only stores and serves never loads it.
    import numpy as np

    count = len(block)
    kind = block[0][0]
    terms = [w[1] for w in block]
    width = terms[-1]  # sorted by term
    n = np.array(terms, dtype=np.int64)
    principal = np.array([w[3] for w in block], dtype=np.float64)
    monthly = np.array([w[4] for w in block], dtype=np.float64) / 12.0
    # One row per period, one column per loan: running sums and products go down the rows, so that
    # numpy handles a whole row of loans per step.
    columns = np.arange(count)
    last = n - 1
    k = np.arange(1, width + 1, dtype=np.float64)[:, None]  # period numbers
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # Fraction of the principal repaid after k periods.
        if kind == 0:
            # S_k = 1 + q + ... + q**(k-1): a sum of positive terms, so no cancellation at small rates.
            powers = np.empty((width, count), dtype=np.float64)
            powers[0] = 1.0
            powers[1:] = 1.0 + monthly
            np.cumprod(powers, axis=0, out=powers)
            sums = np.cumsum(powers, axis=0, out=powers)
            repaid = sums / sums[last, columns]
        elif kind == 1:
            repaid = k / n
        else:
            repaid = (k >= n).astype(np.float64)
        repaid[last, columns] = 1.0
        cumulative_principal = np.rint(principal * repaid)
        # Principal still owed before each period, as a fraction: 1, 1 - f_1, ..., 1 - f_(k-1).
        owed = np.empty_like(repaid)
        owed[0] = 1.0
        np.subtract(1.0, repaid[:-1], out=owed[1:])
        owed *= monthly * principal
        cumulative_interest = np.rint(np.cumsum(owed, axis=0, out=owed))
    return cumulative_principal, cumulative_interest, n


def _schedules(
    cumulative_principal: npt.NDArray[np.float64],
    cumulative_interest: npt.NDArray[np.float64],
    n: npt.NDArray[np.int64],
) -> tuple[list[int], list[int], list[bool]]:
    """Every period's principal and interest of a block, loan after loan, and whether each loan's amounts
    are finite."""
    import numpy as np

    columns = np.arange(len(n))
    finite = np.isfinite(cumulative_interest[n - 1, columns]).tolist()
    k = np.arange(1, cumulative_principal.shape[0] + 1)
    valid = n[:, None] >= k  # loans by periods, the order of the flat lists below
    with np.errstate(invalid="ignore"):
        # A loan whose powers overflowed casts garbage here; it is reported, never used.
        principal_flat = _per_period(cumulative_principal)[valid].tolist()
        interest_flat = _per_period(cumulative_interest)[valid].tolist()
    return principal_flat, interest_flat, finite
