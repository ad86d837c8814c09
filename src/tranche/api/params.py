"""The identifiers routes take in their paths, each validated at the edge with the one shape every identifier
has (:data:`tranche.shared.ids.ID_PATTERN`): a bad one is a 422 naming the parameter, before any handler runs.

:data:`Currency` is the one rule for a currency wherever a route takes one (path, query or body): three letters
in either case, read upper case, and an ISO 4217 code of money loans are made in (``eur`` is ``EUR``; ``XAU`` and
``ABC`` are 422)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, Field

from tranche.shared.errors import ValidationError
from tranche.shared.ids import ID_MAX_LENGTH, ID_PATTERN
from tranche.shared.money import currency_code


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


def _currency(value: str) -> str:
    try:
        return currency_code(value)
    except ValidationError as error:  # pydantic reports a ValueError as a 422 naming the parameter
        raise ValueError(error.message) from None


Currency = Annotated[
    str,
    Field(min_length=3, max_length=3, description="ISO 4217 code, e.g. EUR (either case)"),
    AfterValidator(_currency),
]
