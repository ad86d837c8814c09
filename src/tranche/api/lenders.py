"""Lenders and their configuration, which operators change without code."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from tranche.api.app import container_of
from tranche.api.params import LenderId
from tranche.bootstrap import Container
from tranche.crm import LenderConfig, configure_lender, lender_config_of, register_lender

router = APIRouter(tags=["lenders"])
ContainerDep = Annotated[Container, Depends(container_of)]


class NewLender(BaseModel):
    name: str = Field(min_length=1, max_length=200)


@router.put("/lenders/{lender_id}", summary="Register a lender (idempotent)")
def put_lender(lender_id: LenderId, body: NewLender, container: ContainerDep) -> dict[str, Any]:
    with container.engine.begin() as conn:
        created = register_lender(conn, lender_id, body.name, at=container.clock.now())
        version, config = lender_config_of(conn, lender_id)
    return {
        "lender_id": lender_id,
        "created": created,
        "config_version": version,
        "config": config.model_dump(mode="json"),
    }


@router.get("/lenders/{lender_id}/config", summary="The configuration in force")
def get_config(lender_id: LenderId, container: ContainerDep) -> dict[str, Any]:
    with container.engine.connect() as conn:
        version, config = lender_config_of(conn, lender_id)
    return {"lender_id": lender_id, "version": version, "config": config.model_dump(mode="json")}


@router.put(
    "/lenders/{lender_id}/config", summary="Change the configuration: a new version, the old ones are kept"
)
def put_config(lender_id: LenderId, config: LenderConfig, container: ContainerDep) -> dict[str, Any]:
    with container.engine.begin() as conn:
        version = configure_lender(conn, lender_id, config, at=container.clock.now(), by="api")
    return {"lender_id": lender_id, "version": version, "config": config.model_dump(mode="json")}
