"""Builders of offers for the matching tests."""

from __future__ import annotations

from decimal import Decimal
from itertools import count

from tranche.matching import BuyOffer, Criteria, LoanTraits, SellOffer

_ids = count(1)


def traits(
    country: str = "ES",
    age: int = 30,
    score: int = 720,
    income: int = 300_000,
    risk: str = "A",
    term: int = 36,
    lender: str = "len_1",
) -> LoanTraits:
    return LoanTraits(country, age, score, income, risk, term, lender)


def sell(
    amount: int = 100_000,
    rate: str = "0.10",
    margin: str = "0.02",
    aon: bool = False,
    offer_id: str | None = None,
    currency: str = "EUR",
    **kw: object,
) -> SellOffer:
    n = next(_ids)
    t = traits(**kw)  # type: ignore[arg-type]
    return SellOffer(
        offer_id or f"so_{n}",
        t.lender_id,
        f"loan_{n}",
        1,
        currency,
        amount,
        Decimal(rate),
        Decimal(margin),
        aon,
        t,
    )


def buy(
    amount: int = 100_000,
    ticket: int = 1_000,
    cap: int = 50_000,
    criteria: Criteria | None = None,
    portfolio: str | None = None,
    offer_id: str | None = None,
    currency: str = "EUR",
) -> BuyOffer:
    n = next(_ids)
    return BuyOffer(
        offer_id or f"bo_{n}",
        portfolio or f"pf_{n}",
        "inv_1",
        "bkt_1",
        1,
        currency,
        amount,
        ticket,
        cap,
        criteria or Criteria(),
    )
