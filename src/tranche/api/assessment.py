"""Risk rules, which operators change per lender without code, and the assessments of loans."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from tranche.api.app import container_of
from tranche.assessment.domain import Assessment, RiskRuleVersion
from tranche.assessment.projection import project
from tranche.assessment.rules import parse_risk_rules
from tranche.assessment.store import (
    assessment_history,
    latest_risk_rules,
    risk_rules_history,
    save_risk_rules,
)
from tranche.bootstrap import Container
from tranche.intake.assessing import load_versions
from tranche.shared.errors import NotFoundError
from tranche.shared.loan import Loan

router = APIRouter(tags=["assessment"])
ContainerDep = Annotated[Container, Depends(container_of)]


def _rules_view(version: RiskRuleVersion) -> dict[str, Any]:
    return {
        "lender_id": version.lender_id,
        "version": version.version,
        "rules": version.rules.model_dump(mode="json"),
        "created_at": version.created_at.isoformat() if version.created_at else None,
    }


def _assessment_view(assessment: Assessment, loan: Loan | None) -> dict[str, Any]:
    """An assessment with its dated schedule: as kept (from an external service), or projected again from
    ``loan``, the version it assessed (the built-in projection is a function of the version alone)."""
    view: dict[str, Any] = {
        "lender_id": assessment.lender_id,
        "loan_id": assessment.loan_id,
        "loan_version": assessment.loan_version,
        "risk_group": assessment.risk_group,
        "rule_version": assessment.rule_version,
        "currency": assessment.currency,
        "schedule_type": assessment.schedule_type.value,
        "periods": assessment.periods,
        "total_principal": assessment.total_principal,
        "total_interest": assessment.total_interest,
        "next_payment_amount": assessment.next_payment_amount,
        "next_payment_date": assessment.next_payment_date.isoformat()
        if assessment.next_payment_date
        else None,
        "maturity_date": assessment.maturity_date.isoformat() if assessment.maturity_date else None,
        "assessed_at": assessment.assessed_at.isoformat(),
        "schedule": None,
    }
    projection = (
        assessment.projection() if assessment.has_schedule else project(loan) if loan is not None else None
    )
    if projection is not None:
        view["schedule"] = [
            {"date": p.date.isoformat(), "principal": p.principal, "interest": p.interest}
            for p in projection.periods()
        ]
    return view


@router.get("/lenders/{lender_id}/risk-rules", summary="The risk rules in force (version 0: the defaults)")
def get_risk_rules(lender_id: str, container: ContainerDep) -> dict[str, Any]:
    with container.engine.connect() as conn:
        return _rules_view(latest_risk_rules(conn, lender_id))


@router.get("/lenders/{lender_id}/risk-rules/versions", summary="Every stored version, oldest first")
def get_risk_rules_versions(lender_id: str, container: ContainerDep) -> dict[str, Any]:
    with container.engine.connect() as conn:
        return {
            "lender_id": lender_id,
            "versions": [_rules_view(v) for v in risk_rules_history(conn, lender_id)],
        }


@router.put(
    "/lenders/{lender_id}/risk-rules",
    summary="Change the risk rules: a new version applies to assessments from now on; old ones are kept",
)
def put_risk_rules(
    lender_id: str,
    container: ContainerDep,
    rules: Annotated[dict[str, Any], Body()],
    based_on: int | None = None,
) -> dict[str, Any]:
    parsed = parse_risk_rules(rules)
    with container.engine.begin() as conn:
        version = save_risk_rules(conn, lender_id, parsed, container.clock.now(), based_on=based_on)
    return _rules_view(version)


@router.get(
    "/lenders/{lender_id}/loans/{loan_id}/assessments",
    summary="A loan's assessments, oldest first; the last one is in force",
)
def get_assessments(lender_id: str, loan_id: str, container: ContainerDep) -> dict[str, Any]:
    with container.engine.connect() as conn:
        history = assessment_history(conn, lender_id, loan_id)
        versions = sorted({a.loan_version for a in history if not a.has_schedule})
        loans = {v: loan for loan, v in load_versions(conn, lender_id, [(loan_id, v) for v in versions])}
    if not history:
        raise NotFoundError(
            f"loan {loan_id} of {lender_id} has not been assessed", record=f"{lender_id}/{loan_id}"
        )
    views = [_assessment_view(a, loans.get(a.loan_version)) for a in history]
    return {"lender_id": lender_id, "loan_id": loan_id, "assessments": views}
