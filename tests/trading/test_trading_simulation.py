"""The issue's 75/25 portfolio on a realistic multi-lender market ends within tolerance of its target."""

from __future__ import annotations

import random
from decimal import Decimal

from trading_examples import example_draft
from trading_market import offers

from tranche.matching.book import Matcher
from tranche.matching.criteria import Criteria
from tranche.matching.events import OfferMatched
from tranche.matching.record import InMemoryMatchingRecord
from tranche.matching.service import MatchingService
from tranche.shared.clock import ManualClock
from tranche.trading.handlers import Marketplace
from tranche.trading.service import BucketDraft, PortfolioDraft, TradingService
from tranche.trading.store import InMemoryPortfolioStore


def competitors(rng: random.Random, count: int) -> list[PortfolioDraft]:
    """Other investors' portfolios competing for the same loans."""
    choices = [
        Criteria(countries=frozenset({"ES"})),
        Criteria(countries=frozenset({"LV", "EE"}), min_investor_rate=Decimal("0.08")),
        Criteria(score_min=650),
        Criteria(risk_groups=frozenset({"C", "D"})),
        Criteria(term_max=24, lenders_not_in=frozenset({"len_pl"})),
        Criteria(),
    ]
    drafts = []
    for _ in range(count):
        first, second = rng.sample(choices, 2)
        split = Decimal(rng.choice([50, 60, 70]))
        drafts.append(
            PortfolioDraft(
                "EUR",
                rng.randint(10, 40) * 100_000,
                rng.choice([5_000, 10_000, 20_000]),
                rng.choice([1_000, 2_000]),
                (BucketDraft("one", split, first), BucketDraft("two", 100 - split, second)),
            )
        )
    return drafts


def test_the_75_25_example_ends_within_tolerance_of_its_target_on_a_multi_lender_market() -> None:
    trading = TradingService(InMemoryPortfolioStore(), ManualClock())
    market = Marketplace(trading, MatchingService(Matcher(), InMemoryMatchingRecord()))
    example = trading.create("inv_example", example_draft(total=2_000_000, tolerance="5"))
    for number, draft in enumerate(competitors(random.Random(3), 15)):
        trading.create(f"inv_{number}", draft)
    market.run()
    for offer in offers(8_000, seed=11):
        market.offer_loan(offer)

    view = trading.view(example.portfolio_id)
    assert view.invested >= 2_000_000 * 9 // 10, view
    assert view.within_tolerance, view.buckets
    for bucket in view.buckets:
        assert abs(bucket.actual_percent - bucket.target_percent) <= 5
    # the example's money went only into loans its buckets accept
    bought = [
        bid
        for e in market.events
        if isinstance(e, OfferMatched)
        for bid in e.bids
        if bid.portfolio_id == example.portfolio_id
    ]
    assert sum(b.amount for b in bought) >= view.invested
    assert all(b.amount <= 20_000 for b in bought)
