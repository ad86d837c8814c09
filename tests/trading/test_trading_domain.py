from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trading_examples import RISKY, SAFE, example_portfolio

from tranche.matching import Criteria
from tranche.trading.domain import (
    Bucket,
    BucketPosition,
    PortfolioStatus,
    composition,
    plan_cycle,
    validate,
    within_tolerance,
)
from tranche.trading.errors import InvalidPortfolioError


def test_the_example_portfolio_is_valid_as_written() -> None:
    assert validate(example_portfolio()).buckets[0].criteria == SAFE


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"currency": "EUX"}, "currency"),
        ({"total": 0}, "total"),
        ({"min_ticket": 0}, "min_ticket"),
        ({"max_per_loan": 500}, "max_per_loan"),
        ({"tranche_percent": Decimal(0)}, "tranche_percent"),
        ({"tolerance_percent": Decimal(60)}, "tolerance_percent"),
        ({"buckets": ()}, "buckets"),
        (
            {"buckets": (Bucket("a", "a", Decimal(75), SAFE), Bucket("b", "b", Decimal(20), RISKY))},
            "buckets.weight",
        ),
        (
            {"buckets": (Bucket("a", "a", Decimal(100), Criteria(age_min=40, age_max=30)),)},
            "buckets[0].criteria.borrower_age",
        ),
        (
            {"buckets": (Bucket("a", "a", Decimal(100), Criteria(score_min=700, score_max=600)),)},
            "buckets[0].criteria.credit_score",
        ),
        (
            {"buckets": (Bucket("a", "a", Decimal(100), Criteria(countries=frozenset({"XX"}))),)},
            "buckets[0].criteria.countries",
        ),
        (
            {"buckets": (Bucket("a", "a", Decimal(100), Criteria(risk_groups=frozenset())),)},
            "buckets[0].criteria.risk_groups",
        ),
        (
            {"buckets": (Bucket("a", "a", Decimal(50), SAFE), Bucket("b", "a", Decimal(50), RISKY))},
            "buckets[1].name",
        ),
    ],
)
def test_an_invalid_portfolio_is_rejected_with_an_error_that_names_the_field(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidPortfolioError) as error:
        validate(example_portfolio(**changes))
    assert error.value.field == field
    assert error.value.record == "pf_1"


def test_the_first_cycle_issues_one_tranche_split_by_target_weight() -> None:
    intents = plan_cycle(example_portfolio(), {})
    assert {i.bucket_id: i.amount for i in intents} == {"safe": 750_000, "risky": 250_000}


def test_a_bucket_that_waits_gets_nothing_new_while_the_others_go_on_within_tolerance() -> None:
    portfolio = example_portfolio()
    # the safe bucket holds its share and still waits for 100.00 EUR; the risky one filled its offer
    positions = {
        "safe": BucketPosition(held=3_000_000, wanted=10_000),
        "risky": BucketPosition(held=1_000_000),
    }
    intents = plan_cycle(portfolio, positions)
    assert [i.bucket_id for i in intents] == ["risky"]
    risky = intents[0].amount
    share = Decimal(1_000_000 + risky) * 100 / (4_000_000 + risky)
    assert share <= 25 + portfolio.tolerance_percent


def test_nothing_is_issued_that_would_push_the_composition_out_of_tolerance() -> None:
    portfolio = example_portfolio()
    positions = {"safe": BucketPosition(held=750_000, wanted=750_000), "risky": BucketPosition(held=300_000)}
    # risky already holds 28.6 % (the safe bucket waits): it may grow to 30 % and no further
    assert within_tolerance(portfolio, positions)
    [intent] = plan_cycle(portfolio, positions)
    assert intent.bucket_id == "risky"
    share = Decimal(300_000 + intent.amount) * 100 / (1_050_000 + intent.amount)
    assert 29 < share <= 30


def test_a_paused_portfolio_issues_nothing() -> None:
    assert plan_cycle(example_portfolio(status=PortfolioStatus.PAUSED), {}) == []


def test_the_composition_reports_each_bucket_against_its_target() -> None:
    rows = composition(
        example_portfolio(), {"safe": BucketPosition(held=600), "risky": BucketPosition(held=400)}
    )
    assert [(r.target_percent, r.actual_percent) for r in rows] == [
        (Decimal(75), Decimal("60.00")),
        (Decimal(25), Decimal("40.00")),
    ]


@settings(max_examples=200, deadline=None)
@given(
    held=st.tuples(st.integers(0, 5_000), st.integers(0, 5_000)),
    wanted=st.tuples(st.integers(0, 300), st.integers(0, 300)),
    tolerance=st.integers(1, 10),
)
def test_a_cycle_never_overcommits_nor_moves_a_bucket_further_out_of_tolerance(
    held: tuple[int, int], wanted: tuple[int, int], tolerance: int
) -> None:
    portfolio = replace(example_portfolio(), tolerance_percent=Decimal(tolerance))
    positions = {
        "safe": BucketPosition(held[0] * 1_000, wanted[0] * 1_000),
        "risky": BucketPosition(held[1] * 1_000, wanted[1] * 1_000),
    }
    intents = plan_cycle(portfolio, positions)
    new = {i.bucket_id: i.amount for i in intents}
    assert sum(new.values()) <= max(0, portfolio.total - sum(p.held + p.wanted for p in positions.values()))
    assert sum(new.values()) <= portfolio.total // 10
    for intent in intents:
        assert intent.amount > 0 and intent.amount % portfolio.min_ticket == 0
        assert positions[intent.bucket_id].wanted < portfolio.min_ticket  # waiting buckets get nothing
    before = {k: p.held for k, p in positions.items()}
    after = {k: before[k] + new.get(k, 0) for k in before}
    weights = {"safe": Decimal(75), "risky": Decimal(25)}
    if intents and sum(before.values()):
        for k in before:
            dev_before = abs(Decimal(before[k]) * 100 / sum(before.values()) - weights[k])
            dev_after = abs(Decimal(after[k]) * 100 / sum(after.values()) - weights[k])
            assert dev_after <= max(Decimal(tolerance), dev_before)
