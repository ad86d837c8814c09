"""How a borrower's payment on a loan is split among the loan's holders; pure and deterministic.

The rule, in full:

1. The payment is split pro rata to the principal each party holds just before it: every investor holding
   (one per funded bid) and the part of the loan the lender kept (``outstanding before the payment - sum of
   holdings``). Interest is split first, then principal, each in one pass of
   :func:`tranche.shared.money.allocate` (largest remainder).
2. Principal: weights are the held principal. The lender's retained part stays with the lender (no transfer).
3. Interest: an investor's weight is ``held * investor_rate``; the platform's is
   ``sum(held * (lender_rate - investor_rate))`` over the investors (its margin); the lender's retained part
   weighs ``retained * lender_rate``. So when all bids carry the loan's rate, an investor receives exactly their
   pro rata share of the interest times ``investor_rate / lender_rate``, and the platform the rest of the
   investors' share.
4. Rounding: each share is rounded down to the minor unit and the units left over go, one each, to the
   largest remainders; ties go to the earliest party, investors ordered by their holding's key, then the
   platform, then the lender. Nothing is lost: the shares always sum to the amount. Example: 100.00 EUR among
   three equal holders is 33.34 + 33.33 + 33.33, the extra cent to the first holder by key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from tranche.shared.money import allocate


@dataclass(frozen=True, slots=True)
class Holder:
    """One holding of the loan: its key (the bid id), principal held, and the rates agreed for it."""

    key: str
    held: int
    investor_rate: Decimal
    lender_rate: Decimal


@dataclass(frozen=True, slots=True)
class Split:
    """Shares of one payment: per holder key, principal and interest; the platform's margin; what stays
    with the lender for the part of the loan it kept."""

    principal: dict[str, int]
    interest: dict[str, int]
    margin: int
    retained_principal: int
    retained_interest: int


def _scale(rates: Sequence[Decimal]) -> int:
    """The power of ten that makes every rate an integer."""
    places = 0
    for rate in rates:
        exponent = rate.as_tuple().exponent
        if not isinstance(exponent, int):
            raise ValueError(f"rate {rate} is not finite")
        places = max(places, -exponent)
    return int(10**places)


def _shares(total: int, weights: list[int]) -> list[int]:
    if total == 0 or sum(weights) == 0:
        return [0] * len(weights)
    return allocate(total, weights)


def split_payment(principal: int, interest: int, holders: Sequence[Holder], outstanding_before: int) -> Split:
    """Split a payment of ``principal`` and ``interest`` minor units (see the module's rule).

    ``outstanding_before`` is the loan's outstanding principal just before the payment; what the holders do not
    hold of it is the lender's. When the holders hold more than that (a tape that lags behind), the lender is
    taken to keep nothing.
    """
    if principal < 0 or interest < 0:
        raise ValueError("payments are not negative")
    ordered = sorted((h for h in holders if h.held > 0), key=lambda h: h.key)
    held = sum(h.held for h in ordered)
    retained = max(outstanding_before - held, 0)
    if held + retained == 0:
        return Split({}, {}, 0, principal, interest)
    rates = [h.investor_rate for h in ordered] + [h.lender_rate for h in ordered]
    scale = _scale(rates)
    investor_weights = [h.held * int(h.investor_rate * scale) for h in ordered]
    margin_weight = sum(h.held * int((h.lender_rate - h.investor_rate) * scale) for h in ordered)
    if margin_weight < 0:
        raise ValueError("an investor rate above the lender rate leaves a negative margin")
    # The lender's retained part earns the loan's rate: the highest agreed lender rate (they agree in practice).
    lender_rate = max((h.lender_rate for h in ordered), default=Decimal(0))
    retained_weight = retained * int(lender_rate * scale)
    interest_shares = _shares(interest, [*investor_weights, margin_weight, retained_weight])
    if interest and sum(interest_shares) == 0:  # every rate zero: interest follows principal held
        by_held = allocate(interest, [h.held for h in ordered] + [retained])
        interest_shares = [*by_held[:-1], 0, by_held[-1]]
    principal_shares = _shares(principal, [h.held for h in ordered] + [retained])
    count = len(ordered)
    return Split(
        principal={h.key: principal_shares[i] for i, h in enumerate(ordered)},
        interest={h.key: interest_shares[i] for i, h in enumerate(ordered)},
        margin=interest_shares[count],
        retained_principal=principal_shares[count],
        retained_interest=interest_shares[count + 1],
    )
