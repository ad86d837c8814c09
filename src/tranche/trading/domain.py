"""Portfolios, their validation, and the gap analyzer. Pure: no I/O, no clock.

A portfolio is an investor's standing order: invest ``total`` (minor units of ``currency``) in loan fractions
of at least ``min_ticket`` and at most ``max_per_loan`` per loan, split across buckets by target weight
(percent, summing to 100). Each bucket's criteria select the loans it may buy (see
:class:`tranche.matching.criteria.Criteria`).

The gap analyzer
----------------
Money goes out one *tranche* at a time (``tranche_percent`` of the total, 10 % by default). A bucket whose
buy offer still rests in the book (it wants at least one more ticket) is *waiting*: it gets nothing new. Each
call of :func:`plan_cycle` is one cycle for the buckets that are free:

1. the tranche is the smaller of ``tranche_percent`` of the total and what is left to commit;
2. each free bucket's *gap* is its target share of everything committed after this tranche
   (held + still wanted + the tranche) less what it holds; the tranche is split across free buckets in
   proportion to their gaps (largest remainder), never beyond a bucket's gap, in whole tickets;
3. *tolerance*: assuming the new offers fill and the waiting ones do not, no bucket's share of the holdings
   may end further from its target than ``tolerance_percent`` (or than it already is, if a waiting bucket has
   already pushed it out): the amounts are scaled down until that holds, and to nothing if need be.

So a bucket that cannot fill waits for new loans while the others go on, until going on would push the
composition out of tolerance; then they wait too.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cache
from typing import Protocol

from tranche.matching import Criteria
from tranche.shared.money import allocate, is_currency
from tranche.trading.errors import InvalidPortfolioError

HUNDRED = Decimal(100)


class PortfolioStatus(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Bucket:
    """A slice of a portfolio: a target weight (percent) and the criteria of the loans it buys."""

    bucket_id: str
    name: str
    weight: Decimal
    criteria: Criteria


@dataclass(frozen=True, slots=True)
class Portfolio:
    """An investor's portfolio. Amounts are integer minor units of ``currency``."""

    portfolio_id: str
    investor_id: str
    currency: str
    total: int
    max_per_loan: int
    min_ticket: int
    buckets: tuple[Bucket, ...]
    status: PortfolioStatus = PortfolioStatus.ACTIVE
    tranche_percent: Decimal = Decimal(10)
    tolerance_percent: Decimal = Decimal(5)
    cycle: int = 0
    version: int = 1
    keep_uninvested: int = 0  # cash the gap analyzer leaves uninvested, minor units

    def bucket(self, bucket_id: str) -> Bucket:
        for bucket in self.buckets:
            if bucket.bucket_id == bucket_id:
                return bucket
        raise InvalidPortfolioError(f"no bucket {bucket_id}", record=self.portfolio_id, field="buckets")


@cache
def _country_codes() -> frozenset[str]:
    import pycountry  # its database loads lazily, on first use

    return frozenset(c.alpha_2 for c in pycountry.countries)


def validate(portfolio: Portfolio) -> Portfolio:
    """Check every rule of a portfolio; raise :class:`InvalidPortfolioError` naming the first field at fault."""
    record = portfolio.portfolio_id

    def fail(message: str, field: str) -> InvalidPortfolioError:
        return InvalidPortfolioError(message, record=record, field=field)

    if not is_currency(portfolio.currency):
        raise fail(f"{portfolio.currency!r} is not an ISO 4217 currency code", "currency")
    if portfolio.total <= 0:
        raise fail("the total to invest must be positive", "total")
    if portfolio.min_ticket <= 0:
        raise fail("the minimum ticket must be positive", "min_ticket")
    if portfolio.max_per_loan < portfolio.min_ticket:
        raise fail("the maximum per loan is below the minimum ticket", "max_per_loan")
    if portfolio.max_per_loan > portfolio.total:
        raise fail("the maximum per loan exceeds the total", "max_per_loan")
    if not Decimal(0) < portfolio.tranche_percent <= HUNDRED:
        raise fail("the tranche must be more than 0 % and at most 100 % of the total", "tranche_percent")
    if not Decimal(0) <= portfolio.tolerance_percent < Decimal(50):
        raise fail("the tolerance must be at least 0 % and below 50 %", "tolerance_percent")
    if portfolio.keep_uninvested < 0:
        raise fail("the cash kept uninvested cannot be negative", "keep_uninvested")
    if not portfolio.buckets:
        raise fail("a portfolio needs at least one bucket", "buckets")
    names: set[str] = set()
    for index, bucket in enumerate(portfolio.buckets):
        where = f"buckets[{index}]"
        if bucket.name in names:
            raise fail(f"two buckets are named {bucket.name!r}", f"{where}.name")
        names.add(bucket.name)
        if not Decimal(0) < bucket.weight <= HUNDRED:
            raise fail("a bucket's weight must be more than 0 % and at most 100 %", f"{where}.weight")
        _validate_criteria(bucket.criteria, where, record)
    total_weight = sum((b.weight for b in portfolio.buckets), Decimal(0))
    if total_weight != HUNDRED:
        raise fail(f"the buckets' weights sum to {total_weight} %, not 100 %", "buckets.weight")
    return portfolio


def _validate_criteria(c: Criteria, where: str, record: str) -> None:
    def bad(message: str, field: str) -> InvalidPortfolioError:
        return InvalidPortfolioError(message, record=record, field=f"{where}.criteria.{field}")

    if c.countries is not None:
        if not c.countries:
            raise bad("the list of countries is empty: no loan could match", "countries")
        unknown = sorted(c.countries - _country_codes())
        if unknown:
            raise bad(f"unknown ISO 3166 country codes: {', '.join(unknown)}", "countries")
    for name, low, high in (
        ("borrower_age", c.age_min, c.age_max),
        ("credit_score", c.score_min, c.score_max),
        ("term_months", c.term_min, c.term_max),
    ):
        if low is not None and high is not None and low > high:
            raise bad(f"the range is empty: {low} > {high}", name)
        if (low is not None and low < 0) or (high is not None and high < 0):
            raise bad("a bound is negative", name)
    if c.income_min is not None and c.income_min < 0:
        raise bad("the minimum income is negative", "min_income")
    if c.risk_groups is not None and not c.risk_groups:
        raise bad("the list of risk groups is empty: no loan could match", "risk_groups")
    if c.lenders_in is not None:
        if not c.lenders_in:
            raise bad("the list of lenders is empty: no loan could match", "lenders_in")
        if c.lenders_in & c.lenders_not_in:
            raise bad("a lender is both in and not in", "lenders_not_in")
    if c.min_investor_rate < 0:
        raise bad("the minimum rate is negative", "min_investor_rate")


@dataclass(frozen=True, slots=True)
class HeldPrincipal:
    """What the ledger says of one funded bid: principal still held (after repayments), and written off."""

    held: int
    written_off: int = 0


@dataclass(frozen=True, slots=True)
class BucketPosition:
    """What a bucket holds (principal still held of what it bought, settled or not), still wants (open buy
    offers) and lost (principal written off), in minor units."""

    held: int = 0
    wanted: int = 0
    written_off: int = 0


@dataclass(frozen=True, slots=True)
class BuyIntent:
    """The gap analyzer's decision: buy this much for this bucket in this cycle."""

    bucket_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class BucketComposition:
    """One bucket of a portfolio's composition against its target."""

    bucket_id: str
    name: str
    target_percent: Decimal
    actual_percent: Decimal
    held: int
    wanted: int
    written_off: int = 0


def composition(portfolio: Portfolio, positions: Mapping[str, BucketPosition]) -> list[BucketComposition]:
    """Each bucket's share of the holdings against its target (0 % everywhere while nothing is held)."""
    held_total = sum(positions.get(b.bucket_id, BucketPosition()).held for b in portfolio.buckets)
    rows = []
    for bucket in portfolio.buckets:
        position = positions.get(bucket.bucket_id, BucketPosition())
        actual = (Decimal(position.held) * HUNDRED / held_total) if held_total else Decimal(0)
        rows.append(
            BucketComposition(
                bucket.bucket_id,
                bucket.name,
                bucket.weight,
                actual.quantize(Decimal("0.01")),
                position.held,
                position.wanted,
                position.written_off,
            )
        )
    return rows


def within_tolerance(portfolio: Portfolio, positions: Mapping[str, BucketPosition]) -> bool:
    """True when every bucket's share of the holdings is within the tolerance of its target."""
    held = {b.bucket_id: positions.get(b.bucket_id, BucketPosition()).held for b in portfolio.buckets}
    deviations = _deviations(portfolio, held)
    return all(abs(d) <= portfolio.tolerance_percent for d in deviations.values())


def _deviations(portfolio: Portfolio, held: Mapping[str, int]) -> dict[str, Decimal]:
    total = sum(held.values())
    if total == 0:
        return {b.bucket_id: Decimal(0) for b in portfolio.buckets}
    return {b.bucket_id: Decimal(held[b.bucket_id]) * HUNDRED / total - b.weight for b in portfolio.buckets}


def plan_cycle(
    portfolio: Portfolio, positions: Mapping[str, BucketPosition], cash: int | None = None
) -> list[BuyIntent]:
    """The buy offers of the next cycle (see the module docstring); empty when there is nothing to do.

    ``cash`` is what the investor can still commit (available cash less what it keeps uninvested and what its
    open offers already want): a cycle never asks for more, so demand shrinks to what the investor can pay.
    """
    if portfolio.status is not PortfolioStatus.ACTIVE:
        return []
    ticket = portfolio.min_ticket
    pos = {b.bucket_id: positions.get(b.bucket_id, BucketPosition()) for b in portfolio.buckets}
    committed = sum(p.held + p.wanted for p in pos.values())
    room = portfolio.total - committed
    tranche = min(room, int(Decimal(portfolio.total) * portfolio.tranche_percent / HUNDRED))
    if cash is not None:
        tranche = min(tranche, cash)
    tranche -= tranche % ticket
    if tranche <= 0:
        return []
    free = [b for b in portfolio.buckets if pos[b.bucket_id].wanted < ticket]
    if not free:
        return []
    after = committed + tranche
    gaps = []
    for bucket in free:
        target = int(Decimal(after) * bucket.weight / HUNDRED)
        p = pos[bucket.bucket_id]
        gaps.append(max(0, target - p.held - p.wanted))
    if sum(gaps) == 0:
        return []
    shares = allocate(min(tranche, sum(gaps)), gaps)
    amounts = {b.bucket_id: min(s, g) for b, s, g in zip(free, shares, gaps, strict=True)}
    return _within_tolerance(portfolio, pos, amounts)


def _within_tolerance(
    portfolio: Portfolio, pos: Mapping[str, BucketPosition], amounts: Mapping[str, int]
) -> list[BuyIntent]:
    """Scale the amounts down (in steps of 1/32) until filling them keeps the composition in tolerance."""
    ticket = portfolio.min_ticket
    held = {bucket_id: p.held for bucket_id, p in pos.items()}
    now = _deviations(portfolio, held)
    for step in range(32, 0, -1):
        scaled = {}
        for bucket_id, amount in amounts.items():
            value = amount * step // 32
            scaled[bucket_id] = value - value % ticket
        if not any(scaled.values()):
            continue
        projected = _deviations(portfolio, {k: held[k] + scaled.get(k, 0) for k in held})
        if all(abs(projected[k]) <= max(portfolio.tolerance_percent, abs(now[k])) for k in projected):
            return [BuyIntent(bucket_id, amount) for bucket_id, amount in scaled.items() if amount > 0]
    return []


def next_cycle(portfolio: Portfolio) -> Portfolio:
    """The portfolio with its cycle counter moved on (when a cycle issued offers)."""
    return replace(portfolio, cycle=portfolio.cycle + 1)


def buckets_by_id(buckets: Sequence[Bucket]) -> dict[str, Bucket]:
    return {b.bucket_id: b for b in buckets}


def positions(
    portfolio: Portfolio,
    offers: Sequence[OfferLike],
    fills: Sequence[FillLike],
    funded: Mapping[str, HeldPrincipal] | None = None,
) -> dict[str, BucketPosition]:
    """Each bucket's holdings, what its open offers still want (in whole tickets: an offer that cannot take
    another ticket wants nothing more) and what it lost.

    A fill the ledger has funded (``funded``, by bid id) counts at the principal still held: repayments and
    write-offs reduce it, so the gap analyzer puts the money that came back to work again. A fill not funded yet
    counts at its amount; a rolled-back one not at all.
    """
    funded = funded or {}
    held: dict[str, int] = {b.bucket_id: 0 for b in portfolio.buckets}
    lost: dict[str, int] = {}
    filled: dict[str, int] = {}
    for fill in fills:
        if fill.status == "rolled_back":
            continue
        ledger = funded.get(fill.bid_id)
        if ledger is None:
            held[fill.bucket_id] = held.get(fill.bucket_id, 0) + fill.amount
        else:
            held[fill.bucket_id] = held.get(fill.bucket_id, 0) + ledger.held
            lost[fill.bucket_id] = lost.get(fill.bucket_id, 0) + ledger.written_off
        filled[fill.buy_offer_id] = filled.get(fill.buy_offer_id, 0) + fill.amount
    wanted: dict[str, int] = {b.bucket_id: 0 for b in portfolio.buckets}
    for offer in offers:
        if offer.status != "open":
            continue
        remaining = offer.amount - filled.get(offer.buy_offer_id, 0)
        if remaining >= portfolio.min_ticket:
            wanted[offer.bucket_id] = wanted.get(offer.bucket_id, 0) + remaining
    return {
        bucket_id: BucketPosition(held.get(bucket_id, 0), wanted.get(bucket_id, 0), lost.get(bucket_id, 0))
        for bucket_id in held
    }


class OfferLike(Protocol):
    @property
    def buy_offer_id(self) -> str: ...
    @property
    def bucket_id(self) -> str: ...
    @property
    def amount(self) -> int: ...
    @property
    def status(self) -> str: ...


class FillLike(Protocol):
    @property
    def bid_id(self) -> str: ...
    @property
    def buy_offer_id(self) -> str: ...
    @property
    def bucket_id(self) -> str: ...
    @property
    def amount(self) -> int: ...
    @property
    def status(self) -> str: ...
