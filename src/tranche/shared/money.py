"""Money as integer minor units with a currency; never a float.

>>> Money.parse("12.50", "EUR")
Money(amount=1250, currency='EUR')
>>> Money.parse("12.505", "EUR")
Traceback (most recent call last):
...
tranche.shared.errors.ValidationError: 12.505 has more decimals than EUR allows (2)
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from functools import cache

from tranche.shared.errors import CurrencyMismatchError, ValidationError

# ISO 4217 minor units that are not 2. Everything else in the standard list has two decimals.
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    **dict.fromkeys("CLF UYW".split(), 4),
}
# Codes in ISO 4217 that are not money one lends: precious metals, test and fund codes.
_NOT_LENDABLE = frozenset(
    "XAG XAU XBA XBB XBC XBD XDR XPD XPT XSU XTS XUA XXX BOV CHE CHW COU MXV USN".split()
)


@cache
def _currency_codes() -> frozenset[str]:
    import pycountry  # imported on first use: its database is loaded lazily

    return frozenset(c.alpha_3 for c in pycountry.currencies) - _NOT_LENDABLE


# Amounts are stored as signed 64-bit integers of minor units.
MAX_MINOR = 2**63 - 1


def is_currency(code: str) -> bool:
    """True for an ISO 4217 code of a currency that loans can be made in."""
    return code in _currency_codes()


def minor_exponent(currency: str) -> int:
    """Number of decimals of the currency's minor unit (EUR 2, JPY 0, KWD 3)."""
    if not is_currency(currency):
        raise ValidationError(f"{currency!r} is not an ISO 4217 currency code", field="currency")
    return _EXPONENTS.get(currency, 2)


def currency_code(value: str, *, field: str = "currency") -> str:
    """The ISO 4217 code ``value`` names, upper case: every route accepts ``eur`` as ``EUR``, and refuses a
    code that is not a currency loans can be made in with an error naming ``field``."""
    code = value.strip().upper()
    if not is_currency(code):
        shown = value[:16]
        raise ValidationError(f"{shown!r} is not an ISO 4217 currency code", field=field)
    return code


def to_minor(value: Decimal, currency: str) -> int:
    """Exact conversion of a major-unit Decimal to minor units; more decimals than allowed is an error (never
    rounded, however small the excess), and so is an amount that does not fit 64 bits of minor units."""
    exponent = minor_exponent(currency)
    if not value.is_finite():
        raise ValidationError(f"{value} is not a finite amount")
    shown = f"{value:.6}" if len(str(value)) > 40 else str(value)
    if value and value.adjusted() + exponent > 18:  # 2**63 - 1 has 19 digits: no scaling needed to refuse it
        raise ValidationError(
            f"{shown} {currency} is too large: amounts are at most {to_major(MAX_MINOR, currency)} {currency}"
        )
    if value and _decimals(value) > exponent:
        raise ValidationError(f"{shown} has more decimals than {currency} allows ({exponent})")
    with localcontext() as exact:
        exact.prec = 40  # enough for every amount that passed the bound above: scaling is exact
        scaled = value.scaleb(exponent)
    if abs(scaled) > MAX_MINOR:
        raise ValidationError(
            f"{shown} {currency} is too large: amounts are at most {to_major(MAX_MINOR, currency)} {currency}"
        )
    return int(scaled)


def _decimals(value: Decimal) -> int:
    """How many decimals ``value`` really has (trailing zeros aside), read from its digits: no context rounds."""
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(exponent + trailing))


def to_major(amount: int, currency: str) -> Decimal:
    """Minor units back to a major-unit Decimal with exactly the currency's decimals."""
    return Decimal(amount).scaleb(-minor_exponent(currency))


@dataclass(frozen=True, slots=True, order=False)
class Money:
    """An amount of one currency in integer minor units (cents for EUR)."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.amount) is not int:
            raise TypeError(f"Money amount must be an int of minor units, not {type(self.amount).__name__}")

    @classmethod
    def parse(cls, value: str | Decimal | int, currency: str) -> Money:
        """From major units given as a decimal string, a Decimal or an int."""
        if isinstance(value, float):
            raise TypeError("floats are never money; pass a string or a Decimal")
        try:
            decimal = value if isinstance(value, Decimal) else Decimal(value)
        except InvalidOperation:
            raise ValidationError(f"{value!r} is not a decimal amount") from None
        return cls(to_minor(decimal, currency), currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    def to_decimal(self) -> Decimal:
        return to_major(self.amount, self.currency)

    def __str__(self) -> str:
        return f"{self.to_decimal()} {self.currency}"

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatchError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.amount >= other.amount

    def __bool__(self) -> bool:
        return self.amount != 0


def allocate(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` minor units by integer weights without losing a unit (largest remainder).

    Each share is floor(total * w / sum(w)); the units left over go one each to the largest remainders,
    ties to the earliest position, so the result is deterministic and sums exactly to ``total``.
    A negative total is split as the negation of splitting its absolute value.

    >>> allocate(10000, [1, 1, 1])
    [3334, 3333, 3333]
    """
    if total < 0:
        return [-share for share in allocate(-total, weights)]
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    whole = sum(weights)
    if whole == 0:
        raise ValueError("weights must not all be zero")
    shares = [total * w // whole for w in weights]
    remainders = [total * w % whole for w in weights]
    left = total - sum(shares)
    for index in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[:left]:
        shares[index] += 1
    return shares
