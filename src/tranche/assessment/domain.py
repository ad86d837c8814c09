"""The assessment of a loan version: its projection summed up, its risk group and the rules that gave it.

Pure: the caller passes the day of assessment and the time to record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from tranche.assessment.errors import LoanError
from tranche.assessment.projection import Projection
from tranche.assessment.rules import DEFAULT_RULES, CompiledRules, RiskRules, compile_rules
from tranche.shared.loan import Loan, ScheduleType

__all__ = ["Assessment", "RiskRuleVersion", "assess", "assess_slice"]


@dataclass(frozen=True, slots=True)
class RiskRuleVersion:
    """One stored version of a lender's risk rules. Version 0 is the built-in :data:`DEFAULT_RULES`."""

    lender_id: str
    version: int
    rules: RiskRules
    created_at: datetime | None

    @classmethod
    def default(cls, lender_id: str) -> RiskRuleVersion:
        return cls(lender_id, 0, DEFAULT_RULES, None)

    def compiled(self) -> CompiledRules:
        return compile_rules(self.rules)


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the platform concluded about one loan version; only an assessed loan may be offered.

    Amounts are minor units of ``currency``. ``principal`` and ``interest`` are the projected schedule
    (empty when it was not kept); :meth:`projection` rebuilds it.
    """

    lender_id: str
    loan_id: str
    loan_version: int
    rule_version: int
    risk_group: str
    currency: str
    schedule_type: ScheduleType
    periods: int
    total_principal: int
    total_interest: int
    next_payment_amount: int
    next_payment_date: date | None
    maturity_date: date | None
    assessed_at: datetime
    principal: tuple[int, ...] = ()
    interest: tuple[int, ...] = ()

    @property
    def has_schedule(self) -> bool:
        return len(self.principal) == self.periods

    def projection(self) -> Projection:
        """The projected schedule, if it was kept (see :attr:`has_schedule`)."""
        if not self.has_schedule:
            raise ValueError(f"the schedule of {self.lender_id}/{self.loan_id} was not kept")
        return Projection(
            self.lender_id,
            self.loan_id,
            self.currency,
            self.schedule_type,
            self.next_payment_date,
            self.principal,
            self.interest,
        )


def assess(
    loan: Loan,
    loan_version: int,
    projection: Projection,
    rules: RiskRuleVersion,
    compiled: CompiledRules,
    as_of: date,
    assessed_at: datetime,
    keep_schedule: bool = True,
) -> Assessment:
    """Assess one projected loan version with a lender's rules (``compiled`` from ``rules``)."""
    principal, interest = projection.principal, projection.interest
    return Assessment(
        lender_id=loan.lender_id,
        loan_id=loan.loan_id,
        loan_version=loan_version,
        rule_version=rules.version,
        risk_group=compiled.group_of(loan, projection, as_of),
        currency=loan.currency,
        schedule_type=loan.schedule_type,
        periods=len(principal),
        total_principal=sum(principal),
        total_interest=sum(interest),
        next_payment_amount=principal[0] + interest[0] if principal else 0,
        next_payment_date=projection.first_date,
        maturity_date=projection.maturity_date,
        assessed_at=assessed_at,
        principal=principal if keep_schedule else (),
        interest=interest if keep_schedule else (),
    )


def assess_slice(
    loans: Sequence[tuple[Loan, int]],
    results: Sequence[Projection | LoanError],
    rules: Mapping[str, RiskRuleVersion],
    as_of: date,
    assessed_at: datetime,
    keep_schedule: bool = True,
) -> tuple[list[Assessment], list[LoanError]]:
    """Assess a projected slice of (loan, version) pairs; ``results`` are its projections in order and
    ``rules`` the applicable rule version per lender (a lender missing from it gets the default).
    Returns the assessments and the loans that could not be projected."""
    compiled: dict[str, tuple[RiskRuleVersion, CompiledRules]] = {}
    assessments: list[Assessment] = []
    errors: list[LoanError] = []
    for (loan, version), result in zip(loans, results, strict=True):
        if isinstance(result, LoanError):
            errors.append(result)
            continue
        entry = compiled.get(loan.lender_id)
        if entry is None:
            chosen = rules.get(loan.lender_id) or RiskRuleVersion.default(loan.lender_id)
            entry = compiled[loan.lender_id] = (chosen, chosen.compiled())
        assessments.append(
            assess(loan, version, result, entry[0], entry[1], as_of, assessed_at, keep_schedule)
        )
    return assessments, errors
