"""What a loan's tape does to its holders: the transfers of one loan version's payments and status. Pure.

For each payment of the version, in order, :func:`~tranche.ledger.distribution.split_payment` shares it among
the holdings (and the part of the loan the lender kept) by the principal each held just before it; then:

* interest: lender settlement → investor cash, per holding (code ``interest``), and the platform's margin:
  lender settlement → platform revenue (``margin``);
* principal: lender settlement → investor cash (``principal``), and the holding gives the principal back to the
  loan: investor holding → loan principal (``principal_holding``), so that a holding's balance is always the
  principal still held.

A written-off loan then turns every holding's remaining principal into a loss: investor holding → loan
principal (``write_off``). Transfer ids derive from the loan version (``rp:<lender>:<loan>:<version>:<payment>:
…``, ``wo:<lender>:<loan>:<bid>``), so settling a version twice is the same transfers twice; the store refuses a
version it already settled in the first place. The transfers form one linked chain: all or nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from tranche.ledger import chart
from tranche.ledger.chart import Code
from tranche.ledger.distribution import Holder, split_payment
from tranche.ledger.domain import Transfer
from tranche.ledger.store import HoldingRow, HoldingStatus

LEFT_ACTIVE = {
    "repaid": HoldingStatus.REPAID,
    "defaulted": HoldingStatus.DEFAULTED,
    "written_off": HoldingStatus.WRITTEN_OFF,
}
"""A loan status that ends (or suspends) its holdings, and the holdings' status after it."""


class Payment(NamedTuple):
    """What the borrower paid since the previous tape, in minor units."""

    principal: int
    interest: int


@dataclass(frozen=True, slots=True)
class LoanVersion:
    """One version of a loan as the ledger settles it: its status, outstanding principal after the payments,
    and the payments reported since the previous version."""

    lender_id: str
    loan_id: str
    version: int
    currency: str
    status: str
    outstanding_principal: int
    payments: tuple[Payment, ...] = ()


@dataclass(frozen=True, slots=True)
class Repayment:
    """The transfers of one loan version (one linked chain), the principal each holding lost to a write-off,
    the holdings the version changed, and the status they take (None: they stay as they are)."""

    transfers: list[Transfer]
    written_off: dict[str, int] = field(default_factory=dict)
    touched: tuple[str, ...] = ()
    status: HoldingStatus | None = None


def repayment_transfers(
    loan: LoanVersion, holdings: Sequence[HoldingRow], held: Mapping[str, int]
) -> Repayment:
    """The transfers that settle ``loan`` among ``holdings`` (those that receive payments), where ``held[bid]``
    is the principal each still holds; see the module's docstring."""
    currency, lender, loan_id = loan.currency, loan.lender_id, loan.loan_id
    settlement = chart.lender_settlement(lender, currency).id
    principal_account = chart.loan_principal(lender, loan_id, currency).id
    revenue = chart.platform_revenue(currency).id
    by_bid = {h.bid_id: h for h in holdings}
    remaining_held = {h.bid_id: held.get(h.bid_id, 0) for h in holdings}
    base = f"rp:{lender}:{loan_id}:{loan.version}"
    transfers: list[Transfer] = []
    touched: dict[str, None] = {}

    def move(suffix: str, debit: str, credit: str, amount: int, code: str) -> None:
        transfers.append(Transfer(f"{base}:{suffix}", debit, credit, amount, currency, code, loan_id))

    still_due = sum(p.principal for p in loan.payments)
    for k, payment in enumerate(loan.payments):
        outstanding_before = loan.outstanding_principal + still_due
        still_due -= payment.principal
        holders = [
            Holder(b, remaining_held[b], by_bid[b].investor_rate, by_bid[b].lender_rate)
            for b in remaining_held
        ]
        split = split_payment(payment.principal, payment.interest, holders, outstanding_before)
        for bid_id, amount in split.interest.items():
            if amount:
                cash = chart.investor_cash(by_bid[bid_id].investor_id, currency).id
                move(f"{k}:int:{bid_id}", settlement, cash, amount, Code.INTEREST)
        if split.margin:
            move(f"{k}:margin", settlement, revenue, split.margin, Code.MARGIN)
        for bid_id, amount in split.principal.items():
            if amount:
                holding = by_bid[bid_id]
                move(
                    f"{k}:pri:{bid_id}",
                    settlement,
                    chart.investor_cash(holding.investor_id, currency).id,
                    amount,
                    Code.PRINCIPAL,
                )
                move(
                    f"{k}:hold:{bid_id}",
                    holding.account_id,
                    principal_account,
                    amount,
                    Code.PRINCIPAL_HOLDING,
                )
                remaining_held[bid_id] -= amount
                touched[bid_id] = None
    status = LEFT_ACTIVE.get(loan.status)
    written_off: dict[str, int] = {}
    if status is HoldingStatus.WRITTEN_OFF:
        for bid_id, amount in remaining_held.items():
            if amount > 0:
                holding = by_bid[bid_id]
                transfers.append(
                    Transfer(
                        f"wo:{lender}:{loan_id}:{bid_id}",
                        holding.account_id,
                        principal_account,
                        amount,
                        currency,
                        Code.WRITE_OFF,
                        loan_id,
                    )
                )
                written_off[bid_id] = amount
    if status is not None:
        touched.update(dict.fromkeys(by_bid))
    last = len(transfers) - 1
    chained = [replace(t, linked=True) if i < last else t for i, t in enumerate(transfers)]
    return Repayment(chained, written_off, tuple(touched), status)
