"""The identifiers routes take in their paths, each validated at the edge with the one shape every identifier
has (:data:`tranche.shared.ids.ID_PATTERN`): a bad one is a 422 naming the parameter, before any handler runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from tranche.shared.ids import ID_MAX_LENGTH, ID_PATTERN


def _id(what: str) -> object:
    return Path(
        pattern=ID_PATTERN,
        max_length=ID_MAX_LENGTH,
        description=f"the {what}'s id: 1 to {ID_MAX_LENGTH} letters, digits, '_', '-' or '.', starting with a "
        "letter or digit",
    )


LenderId = Annotated[str, _id("lender")]
InvestorId = Annotated[str, _id("investor")]
PortfolioId = Annotated[str, _id("portfolio")]
BatchId = Annotated[str, _id("batch")]
ItemId = Annotated[str, _id("pipeline item")]
PartitionId = Annotated[str, _id("partition (for intake, the lender)")]
