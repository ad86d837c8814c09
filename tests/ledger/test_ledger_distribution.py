"""Splitting a payment among a loan's holders: pro rata, interest with the margin, no cent lost."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from tranche.ledger.distribution import Holder, split_payment

TEN = Decimal("0.10")


def test_a_hundred_euros_among_three_equal_holders_is_33_34_33_33_33_33() -> None:
    holders = [Holder(k, 50_000, TEN, TEN) for k in ("b", "a", "c")]
    split = split_payment(10_000, 0, holders, outstanding_before=150_000)
    assert split.principal == {"a": 3334, "b": 3333, "c": 3333}
    split = split_payment(0, 10_000, holders, outstanding_before=150_000)
    assert split.interest == {"a": 3334, "b": 3333, "c": 3333} and split.margin == 0


def test_the_platform_takes_the_margin_share_of_the_interest() -> None:
    holders = [Holder("a", 100_000, Decimal("0.08"), TEN), Holder("b", 100_000, Decimal("0.09"), TEN)]
    split = split_payment(0, 2_000, holders, outstanding_before=200_000)
    # a: 1000 * 8/10 = 800, b: 1000 * 9/10 = 900, platform: 200 + 100
    assert split.interest == {"a": 800, "b": 900}
    assert split.margin == 300


def test_the_part_of_the_loan_the_lender_kept_keeps_its_share() -> None:
    holders = [Holder("a", 60_000, TEN, TEN)]
    split = split_payment(10_000, 1_000, holders, outstanding_before=100_000)
    assert split.principal == {"a": 6_000} and split.retained_principal == 4_000
    assert split.interest == {"a": 600} and split.retained_interest == 400


rates = st.decimals(min_value=Decimal("0"), max_value=Decimal("0.3"), places=4)


@given(
    principal=st.integers(0, 10**9),
    interest=st.integers(0, 10**8),
    held=st.lists(st.tuples(st.integers(1, 10**7), rates, rates), min_size=1, max_size=8),
    retained=st.integers(0, 10**7),
)
def test_no_minor_unit_is_ever_lost_and_the_split_is_deterministic(
    principal: int, interest: int, held: list[tuple[int, Decimal, Decimal]], retained: int
) -> None:
    holders = [Holder(f"h{i}", h, min(r1, r2), max(r1, r2)) for i, (h, r1, r2) in enumerate(held)]
    outstanding = sum(h.held for h in holders) + retained
    split = split_payment(principal, interest, holders, outstanding)
    assert sum(split.principal.values()) + split.retained_principal == principal
    assert sum(split.interest.values()) + split.margin + split.retained_interest == interest
    assert all(v >= 0 for v in [*split.principal.values(), *split.interest.values(), split.margin])
    assert split == split_payment(principal, interest, list(reversed(holders)), outstanding)
