from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from matching_factories import buy

from tranche.matching import BidsRolledBack, InMemoryMatchingRecord, Matcher, MatchingService, OfferMatched
from tranche.matching.errors import InvalidOfferError
from tranche.matching.offers import MarginSchedule, RetainedShares, sell_offer_for, sellable_amount
from tranche.shared.loan import Borrower, Loan, LoanStatus, ScheduleType


def loan(**changes: object) -> Loan:
    fields: dict[str, object] = {
        "lender_id": "len_es",
        "loan_id": "L-1",
        "status": LoanStatus.ACTIVE,
        "currency": "EUR",
        "principal": 1_000_000,
        "outstanding_principal": 800_050,
        "interest_rate": Decimal("0.12"),
        "term_months": 36,
        "schedule_type": ScheduleType.ANNUITY,
        "issue_date": date(2026, 1, 1),
        "borrower": Borrower("ES", 31, 300_000, 720),
    }
    fields.update(changes)
    return Loan(**fields)  # type: ignore[arg-type]


def test_the_lender_keeps_at_least_its_share_and_the_rest_is_offered_in_whole_lots() -> None:
    # 10 % of 8,000.50 is 800.05: 7,200.45 could be sold; whole euros make 7,200.00
    assert sellable_amount(800_050, Decimal("0.10"), 100) == 720_000
    assert sellable_amount(800_050, Decimal("0.10"), 100, already_sold=20_000) == 700_000
    assert sellable_amount(100, Decimal("0.10"), 100) == 0


def test_the_margin_is_per_lender_and_product_with_a_default() -> None:
    margins = MarginSchedule(
        Decimal("0.02"), {"len_es": Decimal("0.03")}, {("len_es", "bullet"): Decimal("0.01")}
    )
    offer = sell_offer_for(loan(), 2, "A", margins, RetainedShares())
    assert offer is not None
    assert (offer.margin, offer.investor_rate, offer.product) == (Decimal("0.03"), Decimal("0.09"), "annuity")
    assert offer.offer_id == "len_es/L-1/v2"
    bullet = sell_offer_for(loan(schedule_type=ScheduleType.BULLET), 2, "A", margins, RetainedShares())
    assert bullet is not None and bullet.margin == Decimal("0.01")
    other = sell_offer_for(loan(lender_id="len_lv"), 1, "A", margins, RetainedShares())
    assert other is not None and other.margin == Decimal("0.02")


def test_a_loan_that_is_not_active_is_not_offered() -> None:
    for status in (LoanStatus.REPAID, LoanStatus.WITHDRAWN, LoanStatus.DEFAULTED):
        assert sell_offer_for(loan(status=status), 1, "A", MarginSchedule(), RetainedShares()) is None


def test_a_margin_above_the_loans_rate_is_refused_naming_the_rate() -> None:
    with pytest.raises(InvalidOfferError) as error:
        sell_offer_for(loan(interest_rate=Decimal("0.01")), 1, "A", MarginSchedule(), RetainedShares())
    assert error.value.field == "interest_rate"


def test_a_changed_loan_rolls_back_its_unconfirmed_bids_and_is_offered_again_as_its_new_version() -> None:
    service = MatchingService(Matcher(), InMemoryMatchingRecord())
    service.place_buys([buy(amount=1_000_000, cap=1_000_000, offer_id="b1")])
    first = sell_offer_for(loan(), 1, "A", MarginSchedule(), RetainedShares())
    assert first is not None
    [matched] = service.offer_loan(first)
    assert isinstance(matched, OfferMatched)
    second = sell_offer_for(loan(outstanding_principal=500_000), 2, "A", MarginSchedule(), RetainedShares())
    events = service.replace_loan(first.lender_id, first.loan_id, second, "loan changed")
    assert isinstance(events[0], BidsRolledBack) and events[0].bid_ids == tuple(
        b.bid_id for b in matched.bids
    )
    assert isinstance(events[-1], OfferMatched) and events[-1].loan_version == 2
    assert sum(b.amount for b in events[-1].bids) == 450_000


def test_a_repaid_loan_is_never_sold_after_its_withdrawal_was_received() -> None:
    service = MatchingService(Matcher(), InMemoryMatchingRecord())
    offer = sell_offer_for(loan(), 1, "A", MarginSchedule(), RetainedShares())
    assert offer is not None
    assert service.offer_loan(offer) == []  # no demand yet: it rests
    service.replace_loan(offer.lender_id, offer.loan_id, None, "repaid")
    events = service.place_buys([buy(amount=1_000_000, cap=1_000_000)])
    assert events == []


def test_an_assessed_new_version_replaces_the_loans_live_offer_and_leaving_active_withdraws_it() -> None:
    service = MatchingService(Matcher(), InMemoryMatchingRecord())
    first = sell_offer_for(loan(), 1, "A", MarginSchedule(), RetainedShares())
    assert service.replace_loan("len_es", "L-1", first, "loan changed") == []  # no demand: the offer rests
    assert service.live_offer_of("len_es", "L-1") == "len_es/L-1/v1"
    second = sell_offer_for(loan(outstanding_principal=600_000), 2, "B", MarginSchedule(), RetainedShares())
    service.replace_loan("len_es", "L-1", second, "loan changed")
    assert service.live_offer_of("len_es", "L-1") == "len_es/L-1/v2"
    assert service.matcher.sell_remaining("len_es/L-1/v2") == 540_000
    assert not service.matcher.has_sell("len_es/L-1/v1")
    service.replace_loan("len_es", "L-1", None, "repaid")
    assert service.live_offer_of("len_es", "L-1") is None
    assert service.place_buys([buy(amount=1_000_000, cap=1_000_000)]) == []


def test_the_live_offer_given_again_is_left_as_it_is() -> None:
    service = MatchingService(Matcher(), InMemoryMatchingRecord())
    offer = sell_offer_for(loan(), 1, "A", MarginSchedule(), RetainedShares())
    service.replace_loan("len_es", "L-1", offer, "loan changed")
    assert service.replace_loan("len_es", "L-1", offer, "loan changed") == []
    assert service.live_offer_of("len_es", "L-1") == "len_es/L-1/v1"
