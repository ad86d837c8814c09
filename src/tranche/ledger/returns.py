"""Net annual return as the XIRR of an investor's cash flows, in Decimal. Pure.

The XIRR is the annual rate ``r`` at which the cash flows' present value is zero::

    sum(amount_i / (1 + r) ** (days_i / 365)) = 0

with ``days_i`` counted from the first flow (Actual/365, the convention of spreadsheets and pyxirr). Amounts
stay integer minor units; the rate is a ``Decimal`` computed by Newton's method, falling back to bisection
when Newton leaves the domain or does not converge.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal, localcontext

_ONE = Decimal(1)
_TOLERANCE = Decimal("1e-12")
_LOWEST = Decimal("-0.999999999")


def _aggregate(flows: Iterable[tuple[date, int]]) -> list[tuple[Decimal, Decimal]]:
    by_day: dict[date, int] = {}
    for day, amount in flows:
        by_day[day] = by_day.get(day, 0) + amount
    days = sorted(d for d, a in by_day.items() if a != 0)
    if not days:
        return []
    first = days[0]
    return [(Decimal((d - first).days) / 365, Decimal(by_day[d])) for d in days]


def _npv(rate: Decimal, flows: list[tuple[Decimal, Decimal]]) -> Decimal:
    base = _ONE + rate
    return sum((amount * base ** (-years) for years, amount in flows), Decimal(0))


def _slope(rate: Decimal, flows: list[tuple[Decimal, Decimal]]) -> Decimal:
    base = _ONE + rate
    return sum((-years * amount * base ** (-years - 1) for years, amount in flows), Decimal(0))


def xirr(flows: Iterable[tuple[date, int]], guess: Decimal = Decimal("0.1")) -> Decimal | None:
    """The annual rate that zeroes the flows' present value, to 12 decimals; None when there is none (all
    flows of one sign, or none at all). Money put in is negative, money taken out (or still held) positive."""
    points = _aggregate(flows)
    if not any(a > 0 for _, a in points) or not any(a < 0 for _, a in points):
        return None
    with localcontext() as context:
        context.prec = 40
        rate = guess
        for _ in range(100):
            slope = _slope(rate, points)
            if slope == 0:
                break
            step = _npv(rate, points) / slope
            rate -= step
            if rate <= _LOWEST:
                break
            if abs(step) < _TOLERANCE:
                return rate.quantize(Decimal("1e-12"))
        return _bisect(points)


def _bisect(points: list[tuple[Decimal, Decimal]]) -> Decimal | None:
    low, high = _LOWEST, Decimal(1)
    low_value = _npv(low, points)
    while _npv(high, points) * low_value > 0:
        high *= 2
        if high > Decimal(10) ** 6:
            return None
    for _ in range(400):
        middle = (low + high) / 2
        value = _npv(middle, points)
        if value == 0 or (high - low) / 2 < _TOLERANCE:
            return middle.quantize(Decimal("1e-12"))
        if value * low_value > 0:
            low, low_value = middle, value
        else:
            high = middle
    return ((low + high) / 2).quantize(Decimal("1e-12"))
