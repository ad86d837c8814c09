"""The chart of accounts: which accounts the flows use, their ids and their flags. Pure.

=====================  ====================================  ==========================================
account                id                                    rule
=====================  ====================================  ==========================================
world                  ``world:<cur>``                       none (money outside the platform)
investor cash          ``inv:<investor>:cash:<cur>``         debits must not exceed credits
investor holding       ``hold:<bid>``                        debits must not exceed credits
loan principal         ``loan:<lender>:<loan>:<cur>``        credits must not exceed debits
lender settlement      ``lender:<lender>:settlement:<cur>``  none (either side owes the other)
platform revenue       ``platform:revenue:<cur>``            debits must not exceed credits
=====================  ====================================  ==========================================

Transfer codes (``Transfer.code``) say what each movement is for; reports group by them.
"""

from __future__ import annotations

from tranche.ledger.domain import Account, AccountKind


class Code:
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    FUNDING = "funding"  # investor cash → lender settlement, for a bid
    HOLDING = "holding"  # loan principal → investor holding, for the same bid
    INTEREST = "interest"  # lender settlement → investor cash
    MARGIN = "margin"  # lender settlement → platform revenue
    PRINCIPAL = "principal"  # lender settlement → investor cash
    PRINCIPAL_HOLDING = "principal_holding"  # investor holding → loan principal, as principal comes back
    WRITE_OFF = "write_off"  # investor holding → loan principal: the loss
    PAYOUT = "payout"  # lender settlement → world: the platform pays the lender
    LENDER_PAYMENT = "lender_payment"  # world → lender settlement: the lender pays the platform
    EXPIRED = "expired"


def world(currency: str) -> Account:
    return Account(f"world:{currency}", currency, AccountKind.WORLD)


def investor_cash(investor_id: str, currency: str) -> Account:
    return Account(
        f"inv:{investor_id}:cash:{currency}",
        currency,
        AccountKind.INVESTOR_CASH,
        debits_must_not_exceed_credits=True,
        owner_id=investor_id,
    )


def holding(bid_id: str, investor_id: str, portfolio_id: str, loan_id: str, currency: str) -> Account:
    return Account(
        f"hold:{bid_id}",
        currency,
        AccountKind.INVESTOR_HOLDING,
        debits_must_not_exceed_credits=True,
        owner_id=investor_id,
        loan_id=loan_id,
        portfolio_id=portfolio_id,
    )


def loan_principal(lender_id: str, loan_id: str, currency: str) -> Account:
    return Account(
        f"loan:{lender_id}:{loan_id}:{currency}",
        currency,
        AccountKind.LOAN_PRINCIPAL,
        credits_must_not_exceed_debits=True,
        owner_id=lender_id,
        loan_id=loan_id,
    )


def lender_settlement(lender_id: str, currency: str) -> Account:
    return Account(
        f"lender:{lender_id}:settlement:{currency}",
        currency,
        AccountKind.LENDER_SETTLEMENT,
        owner_id=lender_id,
    )


def platform_revenue(currency: str) -> Account:
    return Account(
        f"platform:revenue:{currency}",
        currency,
        AccountKind.PLATFORM_REVENUE,
        debits_must_not_exceed_credits=True,
    )
