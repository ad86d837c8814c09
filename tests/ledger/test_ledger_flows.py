"""Cash, matches, repayments and loan outcomes through the ledger service, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from tranche.ledger import chart
from tranche.ledger.errors import OverdraftError, TransferExistsError
from tranche.ledger.service import LedgerService
from tranche.matching import Bid, BidsRolledBack, LoanFunded, OfferMatched
from tranche.shared.clock import ManualClock
from tranche.shared.loan import Borrower, Loan, LoanStatus, Payment, ScheduleType
from tranche.shared.money import Money


def eur(value: str) -> Money:
    return Money.parse(value, "EUR")


def bid(bid_id: str, investor: str, amount: int, portfolio: str = "", rate: str = "0.10") -> Bid:
    return Bid(
        bid_id,
        f"buy-{investor}",
        portfolio or f"pf-{investor}",
        investor,
        amount,
        Decimal(rate),
        Decimal("0.10"),
        Decimal("0.10") - Decimal(rate),
    )


def matched(*bids: Bid, loan: str = "L1") -> OfferMatched:
    return OfferMatched(f"m-{loan}", "lender1", loan, 1, "EUR", False, bids)


def loan(
    outstanding: int, *payments: tuple[int, int], status: LoanStatus = LoanStatus.ACTIVE, loan_id: str = "L1"
) -> Loan:
    return Loan(
        "lender1",
        loan_id,
        status,
        "EUR",
        300_000,
        outstanding,
        Decimal("0.10"),
        12,
        ScheduleType.ANNUITY,
        date(2026, 1, 1),
        Borrower("EE", 40, 300_000, 700),
        payments=tuple(Payment(date(2026, 2, 1), p, i) for p, i in payments),
    )


def balance(service: LedgerService, account_id: str) -> int:
    return service.store.account(account_id).balance


def available(service: LedgerService, investor: str) -> int:
    return service.store.account(chart.investor_cash(investor, "EUR").id).available


@pytest.fixture
def service(engine: Engine) -> LedgerService:
    return LedgerService(engine, ManualClock())


def test_deposits_and_withdrawals_move_cash_and_a_withdrawal_never_exceeds_it(service: LedgerService) -> None:
    service.deposit("alice", eur("100.00"), "k1")
    service.deposit("alice", eur("100.00"), "k1")  # a retried request
    service.withdraw("alice", eur("30.00"), "w1")
    assert available(service, "alice") == 7_000
    with pytest.raises(OverdraftError) as caught:
        service.withdraw("alice", eur("70.01"), "w2")
    assert caught.value.record == chart.investor_cash("alice", "EUR").id
    with pytest.raises(TransferExistsError):
        service.deposit("alice", eur("1.00"), "k1")
    assert available(service, "alice") == 7_000
    assert service.store.net_by_currency() == {"EUR": (0, 0)}


def test_a_match_reserves_cash_and_funding_moves_it_to_the_lender(service: LedgerService) -> None:
    service.deposit("alice", eur("1000.00"), "d")
    outcome = service.on_offer_matched(matched(bid("b1", "alice", 40_000), bid("b2", "alice", 10_000)))
    assert outcome.done == ("b1", "b2")
    assert available(service, "alice") == 50_000
    funded = service.on_loan_funded(LoanFunded("lender1", "L1", 1, "EUR", ("b1",)))
    assert funded.done == ("b1",)
    assert balance(service, chart.lender_settlement("lender1", "EUR").id) == 40_000
    assert balance(service, "hold:b1") == 40_000
    rolled = service.on_bids_rolled_back(BidsRolledBack("lender1", "L1", "partial", ("b2",)))
    assert rolled.done == ("b2",)
    assert available(service, "alice") == 60_000
    assert service.on_loan_funded(LoanFunded("lender1", "L1", 1, "EUR", ("b1",))).done == ("b1",)  # replay
    assert balance(service, "hold:b1") == 40_000
    assert service.store.net_by_currency() == {"EUR": (0, 0)}


def test_a_bid_without_enough_cash_is_refused_alone(service: LedgerService) -> None:
    service.deposit("alice", eur("100.00"), "d")
    service.deposit("bob", eur("100.00"), "d")
    outcome = service.on_offer_matched(matched(bid("b1", "alice", 10_000), bid("b2", "bob", 10_001)))
    assert outcome.done == ("b1",)
    assert isinstance(outcome.refused["b2"], OverdraftError)
    assert available(service, "bob") == 10_000


def fund(service: LedgerService, *bids: Bid) -> None:
    for b in bids:
        service.deposit(b.investor_id, Money(b.amount, "EUR"), f"for-{b.bid_id}")
    service.on_offer_matched(matched(*bids))
    service.on_loan_funded(LoanFunded("lender1", "L1", 1, "EUR", tuple(b.bid_id for b in bids)))


def test_a_repayment_of_100_euros_among_three_equal_holders_pays_33_34_33_33_33_33(
    service: LedgerService,
) -> None:
    fund(service, bid("b1", "ann", 100_000), bid("b2", "ben", 100_000), bid("b3", "cy", 100_000))
    service.settle_loan(loan(290_000, (10_000, 0)), version=2)
    assert [available(service, who) for who in ("ann", "ben", "cy")] == [3_334, 3_333, 3_333]
    assert [balance(service, f"hold:b{i}") for i in (1, 2, 3)] == [96_666, 96_667, 96_667]
    assert balance(service, chart.lender_settlement("lender1", "EUR").id) == 300_000 - 10_000


def test_interest_goes_to_holders_less_the_platform_margin(service: LedgerService) -> None:
    fund(service, bid("b1", "ann", 150_000, rate="0.08"), bid("b2", "ben", 150_000, rate="0.10"))
    service.settle_loan(loan(300_000, (0, 2_500)), version=2)
    assert available(service, "ann") == 1_000  # 1250 * 8/10
    assert available(service, "ben") == 1_250
    assert balance(service, chart.platform_revenue("EUR").id) == 250


def test_settling_a_version_twice_changes_nothing(service: LedgerService) -> None:
    fund(service, bid("b1", "ann", 300_000))
    first = service.settle_loan(loan(250_000, (50_000, 2_000)), version=2)
    again = service.settle_loan(loan(250_000, (50_000, 2_000)), version=2)
    assert first.transfers == 3 and again.skipped
    assert available(service, "ann") == 52_000
    assert balance(service, "hold:b1") == 250_000


def test_a_written_off_loan_turns_the_remaining_holdings_into_losses(service: LedgerService) -> None:
    fund(service, bid("b1", "ann", 200_000), bid("b2", "ben", 100_000))
    service.settle_loan(loan(240_000, (60_000, 0), status=LoanStatus.WRITTEN_OFF), version=2)
    assert balance(service, "hold:b1") == 0 and balance(service, "hold:b2") == 0
    assert available(service, "ann") == 40_000 and available(service, "ben") == 20_000
    write_offs = service.store.transfers(["wo:lender1:L1:b1", "wo:lender1:L1:b2"])
    assert {t.amount for t in write_offs.values()} == {160_000, 80_000}
    assert balance(service, chart.loan_principal("lender1", "L1", "EUR").id) == 0
    assert service.store.net_by_currency() == {"EUR": (0, 0)}


def test_fills_and_repayments_notify_each_portfolio_once_per_window(engine: Engine) -> None:
    clock = ManualClock()
    service = LedgerService(engine, clock, drift_window=timedelta(seconds=30))
    fund(service, *(bid(f"b{i}", "ann", 1_000, portfolio="pf-a") for i in range(20)), bid("x", "ben", 5_000))
    service.settle_loan(loan(290_000, (1_000, 100)), version=2)
    assert service.due_drift() == []
    clock.advance(timedelta(seconds=30))
    notes = service.due_drift()
    assert [(n.portfolio_id, n.loan_ids) for n in notes] == [("pf-a", ("L1",)), ("pf-ben", ("L1",))]
    assert service.due_drift() == []


def test_payments_on_tapes_up_to_the_funded_version_are_not_the_holders(service: LedgerService) -> None:
    service.deposit("ann", eur("3000.00"), "d")
    service.on_offer_matched(matched(bid("b1", "ann", 300_000)))
    service.on_loan_funded(LoanFunded("lender1", "L1", 3, "EUR", ("b1",)))
    assert service.settle_loan(loan(300_000, (0, 500)), version=3).skipped
    assert service.settle_loan(loan(290_000, (10_000, 500)), version=4).transfers == 3
    assert available(service, "ann") == 10_500
