from __future__ import annotations

from decimal import Decimal

import pytest
from matching_factories import buy, sell

from tranche.matching import (
    BidsRolledBack,
    Criteria,
    InMemoryMatchingRecord,
    LoanFunded,
    Matcher,
    OfferMatched,
)
from tranche.matching.errors import DuplicateOfferError, InvalidOfferError, OfferWithdrawnError


def matched(events: list[object]) -> list[OfferMatched]:
    return [e for e in events if isinstance(e, OfferMatched)]


def test_a_new_loan_is_sold_to_resting_demand_in_whole_tickets_within_the_cap() -> None:
    m = Matcher()
    m.add_buy(buy(amount=100_000, ticket=1_000, cap=25_500, offer_id="b1"))
    events = m.add_sell(sell(amount=60_000, offer_id="s1"))
    [match] = matched(events)
    [bid] = match.bids
    assert bid.amount == 25_000  # the cap is 25,500: whole tickets of 1,000 make 25,000
    assert (bid.lender_rate, bid.investor_rate, bid.margin) == (
        Decimal("0.10"),
        Decimal("0.08"),
        Decimal("0.02"),
    )
    assert m.sell_remaining("s1") == 35_000
    assert m.buy_remaining("b1") == 75_000


def test_demand_that_asks_a_higher_rate_than_the_loan_pays_is_not_served() -> None:
    m = Matcher()
    m.add_buy(buy(criteria=Criteria(min_investor_rate=Decimal("0.09"))))
    assert m.add_sell(sell(rate="0.10", margin="0.02")) == []


def test_a_loan_outside_the_criteria_is_not_sold_and_rests_for_later_demand() -> None:
    m = Matcher()
    m.add_buy(buy(criteria=Criteria(countries=frozenset({"ES"}), score_min=700)))
    assert m.add_sell(sell(country="ES", score=650, offer_id="low")) == []
    assert m.add_sell(sell(country="LV", score=750, offer_id="lv")) == []
    events = m.add_buy(buy(criteria=Criteria(score_max=660), offer_id="late"))
    [match] = matched(events)
    assert match.sell_offer_id == "low"


def test_one_portfolio_takes_at_most_its_cap_from_one_loan_over_all_its_buckets() -> None:
    m = Matcher()
    m.add_buys(
        [
            buy(portfolio="p", cap=30_000, criteria=Criteria(countries=frozenset({"ES"}))),
            buy(portfolio="p", cap=30_000, criteria=Criteria(score_min=600)),
        ]
    )
    [match] = matched(m.add_sell(sell(amount=100_000)))
    assert sum(b.amount for b in match.bids) == 30_000


def test_the_most_demanding_queue_is_served_first_then_fifo() -> None:
    m = Matcher()
    m.add_buys(
        [
            buy(offer_id="easy", criteria=Criteria(min_investor_rate=Decimal("0.01"))),
            buy(offer_id="hard", criteria=Criteria(min_investor_rate=Decimal("0.07"))),
            buy(offer_id="easy2", criteria=Criteria(min_investor_rate=Decimal("0.01"))),
        ]
    )
    [match] = matched(m.add_sell(sell(amount=120_000)))
    assert [b.buy_offer_id for b in match.bids] == ["hard", "easy", "easy2"]


def test_an_all_or_nothing_loan_is_not_sold_until_demand_covers_all_of_it() -> None:
    m = Matcher()
    m.add_buy(buy(amount=40_000, cap=100_000, offer_id="b1"))
    assert m.add_sell(sell(amount=100_000, aon=True, offer_id="aon")) == []
    assert m.buy_remaining("b1") == 40_000  # nothing parked in the loan
    [match] = matched(m.add_buy(buy(amount=60_000, cap=100_000, offer_id="b2")))
    assert match.all_or_nothing
    assert sum(b.amount for b in match.bids) == 100_000


def test_the_most_sellable_all_or_nothing_loan_is_served_first() -> None:
    m = Matcher()
    m.add_sell(sell(amount=90_000, aon=True, offer_id="big"))
    m.add_sell(sell(amount=40_000, aon=True, offer_id="small"))
    [match] = matched(m.add_buy(buy(amount=90_000, cap=90_000)))
    # 90,000 of demand covers "small" 2.25 times and "big" once: "small" goes first, "big" can no longer fill
    assert match.sell_offer_id == "small"
    assert m.sell_remaining("big") == 90_000


def test_withdrawing_a_loan_rolls_back_its_unconfirmed_bids_and_rematches_the_demand() -> None:
    m = Matcher()
    m.add_buy(buy(amount=50_000, offer_id="b1"))
    m.add_sell(sell(amount=50_000, offer_id="s1"))
    m.add_sell(sell(amount=50_000, offer_id="s2"))
    events = m.withdraw_sell("s1", "withdrawn")
    assert [type(e) for e in events] == [BidsRolledBack, OfferMatched]
    assert matched(events)[0].sell_offer_id == "s2"
    with pytest.raises(OfferWithdrawnError):
        m.confirm("s1")
    with pytest.raises(OfferWithdrawnError):
        m.add_sell(sell(offer_id="s1"))


def test_confirmed_bids_survive_a_withdrawal_and_only_the_rest_is_rolled_back() -> None:
    m = Matcher()
    m.add_buy(buy(amount=30_000, offer_id="b1"))
    m.add_sell(sell(amount=100_000, offer_id="s1"))
    [funded] = m.confirm("s1")
    assert isinstance(funded, LoanFunded)
    m.add_buy(buy(amount=20_000, offer_id="b2"))
    events = m.withdraw_sell("s1", "repaid")
    [rolled] = [e for e in events if isinstance(e, BidsRolledBack)]
    assert rolled.bid_ids == ("s1#2",)


def test_withdrawing_a_buy_offer_resells_the_loans_it_was_on() -> None:
    m = Matcher()
    m.add_buy(buy(amount=50_000, offer_id="first"))
    m.add_buy(buy(amount=50_000, offer_id="second"))
    m.add_sell(sell(amount=50_000, offer_id="s1"))
    events = m.withdraw_buy("first", "portfolio edited")
    [match] = matched(events)
    assert [b.buy_offer_id for b in match.bids] == ["second"]


def test_withdrawing_one_bid_of_a_fully_subscribed_all_or_nothing_loan_rolls_back_all_of_them() -> None:
    m = Matcher()
    m.add_buys([buy(amount=50_000, offer_id="x"), buy(amount=50_000, offer_id="y")])
    m.add_sell(sell(amount=100_000, aon=True, offer_id="aon"))
    events = m.withdraw_buy("x", "portfolio paused")
    [rolled] = [e for e in events if isinstance(e, BidsRolledBack)]
    assert len(rolled.bid_ids) == 2
    assert m.sell_remaining("aon") == 100_000
    assert m.buy_remaining("y") == 50_000


def test_offers_that_break_their_own_rules_are_rejected_naming_the_field() -> None:
    m = Matcher()
    with pytest.raises(InvalidOfferError) as error:
        m.add_buy(buy(ticket=0))
    assert error.value.field == "min_ticket"
    m.add_buy(buy(offer_id="dup"))
    with pytest.raises(DuplicateOfferError):
        m.add_buy(buy(offer_id="dup"))


def test_the_books_rebuilt_from_the_record_equal_the_live_ones() -> None:
    m, record = Matcher(), InMemoryMatchingRecord()

    def step(events: list[object]) -> None:
        record.save(m.drain_changes(), events)  # type: ignore[arg-type]

    step(m.add_buys([buy(amount=70_000, offer_id="b1"), buy(amount=20_000, offer_id="b2", cap=5_000)]))
    step(m.add_sell(sell(amount=30_000, offer_id="s1")))
    step(m.confirm("s1"))
    step(m.add_sell(sell(amount=100_000, aon=True, offer_id="aon")))
    step(m.add_sell(sell(amount=80_000, offer_id="s2")))
    step(m.withdraw_buy("b2", "edited"))
    assert Matcher.restore(record.load()).snapshot() == m.snapshot()
