"""Investors, registered by operators before they deposit cash or define portfolios."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from tranche.api.app import container_of
from tranche.api.params import InvestorId
from tranche.bootstrap import Container
from tranche.crm import investor_name, register_investor

router = APIRouter(tags=["investors"])
ContainerDep = Annotated[Container, Depends(container_of)]


class NewInvestor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


@router.put("/investors/{investor_id}", summary="Register an investor (idempotent)")
def put_investor(investor_id: InvestorId, body: NewInvestor, container: ContainerDep) -> dict[str, Any]:
    with container.engine.begin() as conn:
        created = register_investor(conn, investor_id, body.name, at=container.clock.now())
        name = investor_name(conn, investor_id)
    return {"investor_id": investor_id, "name": name, "created": created}


@router.get("/investors/{investor_id}", summary="A registered investor")
def get_investor(investor_id: InvestorId, container: ContainerDep) -> dict[str, Any]:
    with container.engine.connect() as conn:
        name = investor_name(conn, investor_id)
    return {"investor_id": investor_id, "name": name}
