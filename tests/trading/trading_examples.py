"""The portfolio of the issue's example, and helpers for the trading tests."""

from __future__ import annotations

from decimal import Decimal

from tranche.matching import Criteria
from tranche.trading.domain import Bucket, Portfolio
from tranche.trading.service import BucketDraft, PortfolioDraft

# 75 %: loans issued in Spain to borrowers aged 28-35 with credit score >= 700 and income >= 2,500 EUR
SAFE = Criteria(countries=frozenset({"ES"}), age_min=28, age_max=35, score_min=700, income_min=250_000)
# 25 %: any loan with credit score < 600
RISKY = Criteria(score_max=599)


def example_draft(total: int = 10_000_000, tolerance: str = "5") -> PortfolioDraft:
    """100,000.00 EUR, 10 EUR tickets, at most 200 EUR per loan."""
    return PortfolioDraft(
        currency="EUR",
        total=total,
        max_per_loan=20_000,
        min_ticket=1_000,
        buckets=(
            BucketDraft("low risk, low return", Decimal(75), SAFE),
            BucketDraft("high risk, high return", Decimal(25), RISKY),
        ),
        tolerance_percent=Decimal(tolerance),
    )


def example_portfolio(**changes: object) -> Portfolio:
    fields: dict[str, object] = {
        "portfolio_id": "pf_1",
        "investor_id": "inv_1",
        "currency": "EUR",
        "total": 10_000_000,
        "max_per_loan": 20_000,
        "min_ticket": 1_000,
        "buckets": (
            Bucket("safe", "low risk", Decimal(75), SAFE),
            Bucket("risky", "high risk", Decimal(25), RISKY),
        ),
    }
    fields.update(changes)
    return Portfolio(**fields)  # type: ignore[arg-type]
