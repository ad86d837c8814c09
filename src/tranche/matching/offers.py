"""Turning an assessed loan version into a sell offer: what part is sold and at what margin."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

from tranche.matching.criteria import LoanTraits
from tranche.matching.errors import InvalidOfferError
from tranche.matching.values import SellOffer
from tranche.shared.loan import Loan, LoanStatus


@dataclass(frozen=True, slots=True)
class MarginSchedule:
    """The platform's margin (annual rate points taken from the lender's rate): per (lender, product), else
    per lender, else the default."""

    default: Decimal = Decimal("0.02")
    per_lender: Mapping[str, Decimal] = field(default_factory=dict)
    per_product: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)

    def margin(self, lender_id: str, product: str) -> Decimal:
        found = self.per_product.get((lender_id, product))
        if found is not None:
            return found
        return self.per_lender.get(lender_id, self.default)


@dataclass(frozen=True, slots=True)
class RetainedShares:
    """The share of each loan's outstanding principal its lender keeps (skin in the game), per lender."""

    default: Decimal = Decimal("0.10")
    per_lender: Mapping[str, Decimal] = field(default_factory=dict)

    def share(self, lender_id: str) -> Decimal:
        return self.per_lender.get(lender_id, self.default)


def offer_id_for(lender_id: str, loan_id: str, loan_version: int) -> str:
    """One offer per loan version: the id says which."""
    return f"{lender_id}/{loan_id}/v{loan_version}"


def sellable_amount(outstanding: int, retained_share: Decimal, lot: int, already_sold: int = 0) -> int:
    """Outstanding principal less the lender's retained share (rounded up, so the lender keeps at least its
    share), less what investors already own, in whole lots of the market so no dust is left unsellable."""
    retained = int((Decimal(outstanding) * retained_share).to_integral_value(rounding=ROUND_CEILING))
    amount = max(0, outstanding - retained - already_sold)
    return amount - amount % lot


def sell_offer_for(
    loan: Loan,
    loan_version: int,
    risk_group: str,
    margins: MarginSchedule,
    retained: RetainedShares,
    lot: int = 100,
    already_sold: int = 0,
) -> SellOffer | None:
    """The sell offer of one assessed loan version, or None when nothing of it is for sale (not active,
    or nothing left after the retained share and what investors already hold)."""
    if loan.status is not LoanStatus.ACTIVE:
        return None
    product = str(loan.extra.get("product", loan.schedule_type.value))
    margin = margins.margin(loan.lender_id, product)
    if margin > loan.interest_rate:
        raise InvalidOfferError(
            f"margin {margin} exceeds the loan's rate {loan.interest_rate}",
            record=loan.loan_id,
            field="interest_rate",
        )
    amount = sellable_amount(loan.outstanding_principal, retained.share(loan.lender_id), lot, already_sold)
    if amount <= 0:
        return None
    b = loan.borrower
    traits = LoanTraits(
        b.country, b.age, b.credit_score, b.income_monthly, risk_group, loan.term_months, loan.lender_id
    )
    return SellOffer(
        offer_id_for(loan.lender_id, loan.loan_id, loan_version),
        loan.lender_id,
        loan.loan_id,
        loan_version,
        loan.currency,
        amount,
        loan.interest_rate,
        margin,
        loan.all_or_nothing,
        traits,
        product,
    )
