"""A small, realistic multi-lender market of intake loans, for the trading tests."""

from __future__ import annotations

import random
from datetime import date
from decimal import Decimal

from tranche.matching import Criteria, MarginSchedule, RetainedShares, SellOffer, sell_offer_for
from tranche.shared.loan import Borrower, Loan, LoanStatus, ScheduleType
from tranche.trading.service import BucketDraft, PortfolioDraft

# lender -> (country, typical credit score, share of all-or-nothing loans)
LENDERS = {
    "len_es_a": ("ES", 700, 0.0),
    "len_es_b": ("ES", 640, 0.2),
    "len_lv": ("LV", 620, 0.1),
    "len_ee": ("EE", 660, 0.0),
    "len_pl": ("PL", 580, 0.3),
}
MARGINS = MarginSchedule(Decimal("0.02"), {"len_pl": Decimal("0.03")})
RETAINED = RetainedShares(Decimal("0.10"), {"len_es_a": Decimal("0.05")})


def risk_group(score: int) -> str:
    return "A" if score >= 720 else "B" if score >= 650 else "C" if score >= 580 else "D"


def loans(count: int, seed: int = 7) -> list[tuple[Loan, str]]:
    """Loans of every lender interleaved, with the risk group their assessment gave them."""
    rng = random.Random(seed)
    out = []
    names = sorted(LENDERS)
    for n in range(count):
        lender = names[rng.randrange(len(names))]
        country, score_mean, aon_share = LENDERS[lender]
        score = max(300, min(850, int(rng.gauss(score_mean, 70))))
        principal = rng.randint(20, 300) * 10_000
        rate = Decimal(rng.randint(700, 2200)) / 10_000 + (Decimal("0.04") if score < 600 else Decimal(0))
        loan = Loan(
            lender_id=lender,
            loan_id=f"{lender}-{n}",
            status=LoanStatus.ACTIVE,
            currency="EUR",
            principal=principal,
            outstanding_principal=principal,
            interest_rate=rate,
            term_months=rng.choice([12, 24, 36, 48, 60]),
            schedule_type=ScheduleType.ANNUITY,
            issue_date=date(2026, 1, 1),
            borrower=Borrower(country, rng.randint(21, 65), rng.randint(80, 600) * 1_000, score),
            all_or_nothing=rng.random() < aon_share,
        )
        out.append((loan, risk_group(score)))
    return out


def offers(count: int, seed: int = 7) -> list[SellOffer]:
    result = []
    for loan, group in loans(count, seed):
        offer = sell_offer_for(loan, 1, group, MARGINS, RETAINED, lot=1_000)
        if offer is not None:
            result.append(offer)
    return result


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
