"""Invariants of the matcher over random sequences of offers, withdrawals and confirmations."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tranche.matching import (
    BidsRolledBack,
    BuyOffer,
    Criteria,
    InMemoryMatchingRecord,
    LoanFunded,
    LoanTraits,
    Matcher,
    MatchEvent,
    OfferMatched,
    SellOffer,
)

COUNTRIES = ["ES", "LV", "EE"]
LENDERS = ["len_a", "len_b", "len_c"]
RISKS = ["A", "B", "C"]
RATES = [Decimal(r) for r in ("0.05", "0.08", "0.11", "0.14")]


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


@st.composite
def criteria(draw: st.DrawFn) -> Criteria:
    age_min = draw(optional(st.integers(18, 60)))
    score_min = draw(optional(st.integers(300, 800)))
    term_min = draw(optional(st.sampled_from([6, 12, 24])))
    return Criteria(
        countries=draw(optional(st.frozensets(st.sampled_from(COUNTRIES), min_size=1))),
        age_min=age_min,
        age_max=draw(optional(st.integers(age_min or 18, 75))),
        score_min=score_min,
        score_max=draw(optional(st.integers(score_min or 300, 850))),
        income_min=draw(optional(st.sampled_from([100_000, 250_000, 400_000]))),
        risk_groups=draw(optional(st.frozensets(st.sampled_from(RISKS), min_size=1))),
        term_min=term_min,
        term_max=draw(optional(st.sampled_from([x for x in (12, 36, 60) if x >= (term_min or 0)]))),
        lenders_in=draw(optional(st.frozensets(st.sampled_from(LENDERS), min_size=1))),
        lenders_not_in=draw(st.frozensets(st.sampled_from(LENDERS), max_size=1)),
        min_investor_rate=draw(st.sampled_from([Decimal(0), *RATES])),
    )


@st.composite
def sell_offers(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "traits": LoanTraits(
            draw(st.sampled_from(COUNTRIES)),
            draw(st.integers(18, 75)),
            draw(st.integers(300, 850)),
            draw(st.sampled_from([80_000, 250_000, 500_000])),
            draw(st.sampled_from(RISKS)),
            draw(st.sampled_from([6, 12, 24, 36, 60])),
            draw(st.sampled_from(LENDERS)),
        ),
        "amount": draw(st.integers(0, 40)) * 500,
        "rate": draw(st.sampled_from(RATES)),
        "margin": draw(st.sampled_from([Decimal(0), Decimal("0.01"), Decimal("0.02")])),
        "aon": draw(st.booleans()),
    }


@st.composite
def buy_offers(draw: st.DrawFn) -> dict[str, Any]:
    ticket = draw(st.sampled_from([500, 1_000, 2_500]))
    return {
        "portfolio": draw(st.sampled_from(["p1", "p2", "p3", "p4"])),
        "amount": draw(st.integers(0, 60)) * 500,
        "ticket": ticket,
        "cap": ticket * draw(st.integers(1, 8)),
        "criteria": draw(criteria()),
    }


operations = st.lists(
    st.one_of(
        st.tuples(st.just("sell"), sell_offers()),
        st.tuples(st.just("buys"), st.lists(buy_offers(), min_size=1, max_size=3)),
        st.tuples(st.just("withdraw_sell"), st.integers(0, 1000)),
        st.tuples(st.just("withdraw_buy"), st.integers(0, 1000)),
        st.tuples(st.just("confirm"), st.integers(0, 1000)),
    ),
    max_size=40,
)


class Run:
    """Drives a matcher and keeps, beside it, what the events say happened."""

    def __init__(self) -> None:
        self.matcher = Matcher()
        self.record = InMemoryMatchingRecord()
        self.sells: dict[str, SellOffer] = {}
        self.buys: dict[str, BuyOffer] = {}
        self.withdrawn: set[str] = set()
        self.bids: dict[str, tuple[str, int, str]] = {}  # bid id -> (sell offer id, amount, status)
        self.bid_buy: dict[str, str] = {}
        self.n = 0

    def step(self, events: list[MatchEvent]) -> None:
        self.record.save(self.matcher.drain_changes(), events)
        for event in events:
            if isinstance(event, OfferMatched):
                assert event.sell_offer_id not in self.withdrawn, "a withdrawn loan was sold"
                offer = self.sells[event.sell_offer_id]
                per_portfolio: dict[str, int] = defaultdict(int)
                for bid in event.bids:
                    buy = self.buys[bid.buy_offer_id]
                    assert buy.buy_offer_id not in self.withdrawn
                    assert buy.criteria.accepts(offer.traits)
                    assert bid.investor_rate >= buy.criteria.min_investor_rate
                    assert bid.investor_rate == bid.lender_rate - bid.margin == offer.investor_rate
                    assert bid.amount > 0 and bid.amount % buy.min_ticket == 0
                    per_portfolio[buy.portfolio_id] += bid.amount
                    self.bids[bid.bid_id] = (event.sell_offer_id, bid.amount, "placed")
                    self.bid_buy[bid.bid_id] = bid.buy_offer_id
                for portfolio, amount in per_portfolio.items():
                    cap = max(b.per_loan_cap for b in self.buys.values() if b.portfolio_id == portfolio)
                    assert self.taken(event.sell_offer_id, portfolio) <= cap, amount
            elif isinstance(event, LoanFunded):
                for bid_id in event.bid_ids:
                    sell_id, amount, status = self.bids[bid_id]
                    assert status == "placed"
                    self.bids[bid_id] = (sell_id, amount, "confirmed")
            elif isinstance(event, BidsRolledBack):
                for bid_id in event.bid_ids:
                    sell_id, amount, status = self.bids[bid_id]
                    assert status == "placed", "a confirmed bid was rolled back"
                    self.bids[bid_id] = (sell_id, amount, "rolled_back")
        self.check()

    def taken(self, sell_id: str, portfolio: str) -> int:
        return sum(
            amount
            for bid_id, (s, amount, status) in self.bids.items()
            if s == sell_id
            and status != "rolled_back"
            and self.buys[self.bid_buy[bid_id]].portfolio_id == portfolio
        )

    def check(self) -> None:
        sold: dict[str, int] = defaultdict(int)
        bought: dict[str, int] = defaultdict(int)
        for bid_id, (sell_id, amount, status) in self.bids.items():
            if status != "rolled_back":
                sold[sell_id] += amount
                bought[self.bid_buy[bid_id]] += amount
        for sell_id, amount in sold.items():
            offer = self.sells[sell_id]
            assert amount <= offer.amount, "a loan was sold beyond its offered amount"
            if offer.all_or_nothing:
                assert amount in (0, offer.amount), "an all-or-nothing loan was partly funded"
        for buy_id, amount in bought.items():
            assert amount <= self.buys[buy_id].amount, "a bucket bought beyond its demand"
        assert Matcher.restore(self.record.load()).snapshot() == self.matcher.snapshot()

    def play(self, op: tuple[str, Any]) -> None:
        kind, arg = op
        self.n += 1
        m = self.matcher
        if kind == "sell":
            t: LoanTraits = arg["traits"]
            offer = SellOffer(
                f"s{self.n}",
                t.lender_id,
                f"l{self.n}",
                1,
                "EUR",
                arg["amount"],
                arg["rate"],
                arg["margin"],
                arg["aon"],
                t,
            )
            self.sells[offer.offer_id] = offer
            self.step(m.add_sell(offer))
        elif kind == "buys":
            offers = []
            for i, b in enumerate(arg):
                offer_b = BuyOffer(
                    f"b{self.n}.{i}",
                    b["portfolio"],
                    "inv",
                    "bkt",
                    1,
                    "EUR",
                    b["amount"],
                    b["ticket"],
                    b["cap"],
                    b["criteria"],
                )
                # a portfolio has one per-loan cap for all of its buckets
                for other in self.buys.values():
                    if other.portfolio_id == offer_b.portfolio_id:
                        offer_b = BuyOffer(
                            **{
                                **_fields(offer_b),
                                "per_loan_cap": other.per_loan_cap,
                                "min_ticket": min(other.min_ticket, offer_b.min_ticket),
                            }
                        )
                        break
                self.buys[offer_b.buy_offer_id] = offer_b
                offers.append(offer_b)
            self.step(m.add_buys(offers))
        elif kind == "withdraw_sell":
            live = m.open_sell_ids()
            if live:
                offer_id = live[arg % len(live)]
                self.withdrawn.add(offer_id)
                self.step(m.withdraw_sell(offer_id, "withdrawn"))
        elif kind == "withdraw_buy":
            live = m.open_buy_ids()
            if live:
                offer_id = live[arg % len(live)]
                self.withdrawn.add(offer_id)
                self.step(m.withdraw_buy(offer_id, "edited"))
        else:
            live = m.open_sell_ids()
            if live:
                self.step(m.confirm(live[arg % len(live)]))


def _fields(offer: BuyOffer) -> dict[str, Any]:
    return {name: getattr(offer, name) for name in BuyOffer.__dataclass_fields__}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_random_trading_keeps_every_matching_invariant_and_rebuilds_to_the_same_books(
    ops: list[tuple[str, Any]],
) -> None:
    run = Run()
    for op in ops:
        run.play(op)
