"""Where portfolios, their buy offers and fills are kept: the port and its in-memory implementation.

``tranche.trading.adapters.SqlPortfolioStore`` is the implementation on the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from tranche.matching import Criteria
from tranche.trading.domain import Bucket, Portfolio, PortfolioStatus
from tranche.trading.errors import PortfolioNotFoundError
from tranche.trading.events import PortfolioChanged

OfferStatus = Literal["open", "withdrawn"]
FillStatus = Literal["placed", "confirmed", "rolled_back"]


@dataclass(frozen=True, slots=True)
class OfferRow:
    """A buy offer as trading remembers it: which portfolio (version), bucket and cycle made it."""

    buy_offer_id: str
    portfolio_id: str
    portfolio_version: int
    bucket_id: str
    cycle: int
    amount: int
    status: OfferStatus = "open"


@dataclass(frozen=True, slots=True)
class FillRow:
    """One bid of the matcher on one of trading's buy offers."""

    bid_id: str
    buy_offer_id: str
    portfolio_id: str
    bucket_id: str
    amount: int
    status: FillStatus = "placed"


class PortfolioStore(Protocol):
    """Portfolios, the buy offers each cycle issued, and what they bought.

    ``add`` and ``replace`` store a portfolio's terms and announce the change (:class:`PortfolioChanged`) in the
    same transaction, so that the market applies exactly the changes that were stored.
    """

    def add(self, portfolio: Portfolio, now: datetime, change: PortfolioChanged) -> None: ...

    def get(self, portfolio_id: str) -> Portfolio:
        """The portfolio; :class:`PortfolioNotFoundError` when there is none."""
        ...

    def list_for(self, investor_id: str) -> list[Portfolio]: ...

    def replace(self, portfolio: Portfolio, now: datetime, change: PortfolioChanged) -> None: ...

    def advance_cycle(self, portfolio_id: str, cycle: int, now: datetime) -> None:
        """Record that the gap analyzer ran cycle ``cycle``; nothing else of the portfolio changes (terms
        edited meanwhile by another process stay as they were stored)."""
        ...

    def active_ids(self) -> list[str]: ...

    def active_of(self, investor_id: str, currency: str) -> list[str]:
        """The investor's active portfolios in one currency."""
        ...

    def ids_in(self, currency: str) -> list[str]:
        """Every portfolio in one currency, whatever its status."""
        ...

    def add_offers(self, offers: Sequence[OfferRow], now: datetime) -> None: ...

    def set_offer_status(self, buy_offer_ids: Iterable[str], status: OfferStatus) -> None: ...

    def offers(self, portfolio_id: str) -> list[OfferRow]: ...

    def owners(self, buy_offer_ids: Iterable[str]) -> dict[str, OfferRow]:
        """Trading's offers among these ids (bids on other offers are not trading's business)."""
        ...

    def add_fills(self, rows: Sequence[FillRow]) -> None: ...

    def set_fill_status(self, bid_ids: Iterable[str], status: FillStatus) -> set[str]:
        """Change the fills' status; returns the portfolios they belong to."""
        ...

    def fills(self, portfolio_id: str) -> list[FillRow]: ...


def buckets_to_json(buckets: Sequence[Bucket]) -> str:
    return json.dumps(
        [
            {
                "bucket_id": b.bucket_id,
                "name": b.name,
                "weight": str(b.weight),
                "criteria": b.criteria.to_dict(),
            }
            for b in buckets
        ],
        sort_keys=True,
    )


def buckets_from_json(text: str) -> tuple[Bucket, ...]:
    data: list[dict[str, Any]] = json.loads(text)
    return tuple(
        Bucket(d["bucket_id"], d["name"], Decimal(d["weight"]), Criteria.from_dict(d["criteria"]))
        for d in data
    )


class InMemoryPortfolioStore:
    """The store in dicts: for tests and for running without a database."""

    def __init__(self) -> None:
        self._portfolios: dict[str, Portfolio] = {}
        self._offers: dict[str, OfferRow] = {}
        self._fills: dict[str, FillRow] = {}
        self.announced: list[PortfolioChanged] = []  # what the SQL store writes to the outbox

    def add(self, portfolio: Portfolio, now: datetime, change: PortfolioChanged) -> None:
        self._portfolios[portfolio.portfolio_id] = portfolio
        self.announced.append(change)

    def get(self, portfolio_id: str) -> Portfolio:
        found = self._portfolios.get(portfolio_id)
        if found is None:
            raise PortfolioNotFoundError(f"no portfolio {portfolio_id}", record=portfolio_id)
        return found

    def list_for(self, investor_id: str) -> list[Portfolio]:
        return [p for p in self._portfolios.values() if p.investor_id == investor_id]

    def replace(self, portfolio: Portfolio, now: datetime, change: PortfolioChanged) -> None:
        self.get(portfolio.portfolio_id)
        self._portfolios[portfolio.portfolio_id] = portfolio
        self.announced.append(change)

    def advance_cycle(self, portfolio_id: str, cycle: int, now: datetime) -> None:
        self._portfolios[portfolio_id] = replace(self.get(portfolio_id), cycle=cycle)

    def active_ids(self) -> list[str]:
        return [p.portfolio_id for p in self._portfolios.values() if p.status is PortfolioStatus.ACTIVE]

    def ids_in(self, currency: str) -> list[str]:
        return [p.portfolio_id for p in self._portfolios.values() if p.currency == currency]

    def active_of(self, investor_id: str, currency: str) -> list[str]:
        return [
            p.portfolio_id
            for p in self._portfolios.values()
            if p.investor_id == investor_id and p.currency == currency and p.status is PortfolioStatus.ACTIVE
        ]

    def add_offers(self, offers: Sequence[OfferRow], now: datetime) -> None:
        for offer in offers:
            self._offers[offer.buy_offer_id] = offer

    def set_offer_status(self, buy_offer_ids: Iterable[str], status: OfferStatus) -> None:
        for offer_id in buy_offer_ids:
            self._offers[offer_id] = replace(self._offers[offer_id], status=status)

    def offers(self, portfolio_id: str) -> list[OfferRow]:
        return [o for o in self._offers.values() if o.portfolio_id == portfolio_id]

    def owners(self, buy_offer_ids: Iterable[str]) -> dict[str, OfferRow]:
        return {i: self._offers[i] for i in buy_offer_ids if i in self._offers}

    def add_fills(self, rows: Sequence[FillRow]) -> None:
        for row in rows:
            self._fills[row.bid_id] = row

    def set_fill_status(self, bid_ids: Iterable[str], status: FillStatus) -> set[str]:
        touched: set[str] = set()
        for bid_id in bid_ids:
            row = self._fills.get(bid_id)
            if row is not None:
                self._fills[bid_id] = replace(row, status=status)
                touched.add(row.portfolio_id)
        return touched

    def fills(self, portfolio_id: str) -> list[FillRow]:
        return [f for f in self._fills.values() if f.portfolio_id == portfolio_id]
