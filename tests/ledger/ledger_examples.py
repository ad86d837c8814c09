"""Bids, matches and loan versions the ledger's tests build their scenarios from."""

from __future__ import annotations

from decimal import Decimal

from tranche.ledger import LedgerService, LoanVersion, Payment, chart
from tranche.matching import Bid, LoanFunded, OfferMatched
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


def matched(*bids: Bid, loan: str = "L1", all_or_nothing: bool = False, version: int = 1) -> OfferMatched:
    return OfferMatched(f"m-{loan}", "lender1", loan, version, "EUR", all_or_nothing, bids)


def loan(
    outstanding: int,
    *payments: tuple[int, int],
    status: str = "active",
    loan_id: str = "L1",
    version: int = 2,
) -> LoanVersion:
    return LoanVersion(
        "lender1", loan_id, version, "EUR", status, outstanding, tuple(Payment(p, i) for p, i in payments)
    )


def balance(service: LedgerService, account_id: str) -> int:
    return service.store.accounts([account_id])[account_id].balance


def available(service: LedgerService, investor: str) -> int:
    account_id = chart.investor_cash(investor, "EUR").id
    account = service.store.accounts([account_id]).get(account_id)
    return 0 if account is None else account.available


def fund(service: LedgerService, *bids: Bid, loan_id: str = "L1", version: int = 1) -> None:
    """Deposit what each bid needs, reserve the bids and fund them."""
    for b in bids:
        service.deposit(b.investor_id, Money(b.amount, "EUR"), f"for-{b.bid_id}")
    answer = service.reserve([matched(*bids, loan=loan_id, version=version)])
    assert not answer.refused, answer.refused
    service.fund(LoanFunded("lender1", loan_id, version, "EUR", tuple(b.bid_id for b in bids)))
