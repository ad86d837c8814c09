"""What the market shows, read from matching's durable record (any process can answer, not only the one that
holds the books): open supply and demand per currency, and the story of one loan on the market."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, and_, func, select

from tranche.matching.tables import bids, buy_offers, refused_offers, sell_offers
from tranche.shared.clock import stored_utc

_LIVE = ("placed", "confirmed")


@dataclass(frozen=True, slots=True)
class MarketFigures:
    """One currency's market: what is for sale and wanted now, and what was ever offered and sold."""

    currency: str
    open_offers: int
    open_supply: int  # minor units of open sell offers not yet sold
    open_buy_offers: int
    open_demand: int  # minor units open buy offers still want
    offered: int  # minor units of every sell offer ever made
    sold: int  # minor units confirmed
    placed: int  # minor units placed and waiting for the ledger

    @property
    def fill_rate(self) -> Decimal:
        """Share of everything offered that was sold."""
        return (
            (Decimal(self.sold) / Decimal(self.offered)).quantize(Decimal("0.0001"))
            if self.offered
            else Decimal(0)
        )


def market_figures(conn: Connection, currency: str) -> MarketFigures:
    sold_on = (
        select(bids.c.sell_offer_id, func.sum(bids.c.amount).label("sold"))
        .where(bids.c.status.in_(_LIVE))
        .group_by(bids.c.sell_offer_id)
        .subquery()
    )
    supply = conn.execute(
        select(
            func.count(), func.coalesce(func.sum(sell_offers.c.amount - func.coalesce(sold_on.c.sold, 0)), 0)
        )
        .select_from(sell_offers.outerjoin(sold_on, sold_on.c.sell_offer_id == sell_offers.c.offer_id))
        .where(sell_offers.c.currency == currency, sell_offers.c.status == "open")
    ).one()
    bought_by = (
        select(bids.c.buy_offer_id, func.sum(bids.c.amount).label("bought"))
        .where(bids.c.status.in_(_LIVE))
        .group_by(bids.c.buy_offer_id)
        .subquery()
    )
    demand = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(buy_offers.c.amount - func.coalesce(bought_by.c.bought, 0)), 0),
        )
        .select_from(buy_offers.outerjoin(bought_by, bought_by.c.buy_offer_id == buy_offers.c.buy_offer_id))
        .where(buy_offers.c.currency == currency, buy_offers.c.status == "open")
    ).one()
    offered = conn.execute(
        select(func.coalesce(func.sum(sell_offers.c.amount), 0)).where(sell_offers.c.currency == currency)
    ).scalar_one()
    by_status = dict(
        conn.execute(
            select(bids.c.status, func.coalesce(func.sum(bids.c.amount), 0))
            .join(sell_offers, sell_offers.c.offer_id == bids.c.sell_offer_id)
            .where(sell_offers.c.currency == currency)
            .group_by(bids.c.status)
        )
        .tuples()
        .all()
    )
    return MarketFigures(
        currency,
        int(supply[0]),
        int(supply[1]),
        int(demand[0]),
        int(demand[1]),
        int(offered),
        int(by_status.get("confirmed", 0)),
        int(by_status.get("placed", 0)),
    )


@dataclass(frozen=True, slots=True)
class SaleOfLoan:
    """One confirmed (or still placed) bid on a loan: to whom, how much, at what investor rate."""

    bid_id: str
    loan_version: int
    portfolio_id: str
    investor_id: str
    amount: int
    investor_rate: Decimal
    status: str


@dataclass(frozen=True, slots=True)
class OfferOfLoan:
    """One version of a loan as it was offered."""

    offer_id: str
    loan_version: int
    currency: str
    amount: int
    sold: int
    lender_rate: Decimal
    margin: Decimal
    all_or_nothing: bool
    status: str  # open | withdrawn | finished


@dataclass(frozen=True, slots=True)
class RefusalOfLoan:
    loan_version: int
    field: str
    reason: str
    refused_at: datetime


@dataclass(frozen=True, slots=True)
class LoanOnMarket:
    """A loan's story on the market: every version offered, every sale, every refusal; ``state`` sums it up
    (``not_offered``, ``refused``, ``on_offer``, ``partly_sold``, ``sold``, ``off_market``)."""

    lender_id: str
    loan_id: str
    state: str
    offers: tuple[OfferOfLoan, ...]
    sales: tuple[SaleOfLoan, ...]
    refusals: tuple[RefusalOfLoan, ...]


def loan_on_market(conn: Connection, lender_id: str, loan_id: str) -> LoanOnMarket:
    offers = conn.execute(
        select(sell_offers)
        .where(sell_offers.c.lender_id == lender_id, sell_offers.c.loan_id == loan_id)
        .order_by(sell_offers.c.loan_version)
    ).all()
    sales = conn.execute(
        select(bids, sell_offers.c.loan_version)
        .join(sell_offers, and_(sell_offers.c.offer_id == bids.c.sell_offer_id))
        .where(
            sell_offers.c.lender_id == lender_id, sell_offers.c.loan_id == loan_id, bids.c.status.in_(_LIVE)
        )
        .order_by(bids.c.bid_id)
    ).all()
    refusals = conn.execute(
        select(refused_offers)
        .where(refused_offers.c.lender_id == lender_id, refused_offers.c.loan_id == loan_id)
        .order_by(refused_offers.c.loan_version)
    ).all()
    sold: dict[str, int] = {}
    for sale in sales:
        sold[sale.sell_offer_id] = sold.get(sale.sell_offer_id, 0) + int(sale.amount)
    offer_rows = tuple(
        OfferOfLoan(
            o.offer_id,
            o.loan_version,
            o.currency,
            int(o.amount),
            sold.get(o.offer_id, 0),
            Decimal(o.lender_rate),
            Decimal(o.margin),
            bool(o.all_or_nothing),
            o.status,
        )
        for o in offers
    )
    refusal_rows = tuple(
        RefusalOfLoan(r.loan_version, r.field, r.reason, stored_utc(r.refused_at)) for r in refusals
    )
    return LoanOnMarket(
        lender_id,
        loan_id,
        _state(offer_rows, refusal_rows),
        offer_rows,
        tuple(
            SaleOfLoan(
                s.bid_id,
                s.loan_version,
                s.portfolio_id,
                s.investor_id,
                int(s.amount),
                Decimal(s.investor_rate),
                s.status,
            )
            for s in sales
        ),
        refusal_rows,
    )


def _state(offers: tuple[OfferOfLoan, ...], refusals: tuple[RefusalOfLoan, ...]) -> str:
    latest_offer = offers[-1] if offers else None
    latest_refusal = refusals[-1] if refusals else None
    if latest_refusal is not None and (
        latest_offer is None or latest_refusal.loan_version >= latest_offer.loan_version
    ):
        return "refused"
    if latest_offer is None:
        return "not_offered"
    if latest_offer.status == "open":
        return "partly_sold" if latest_offer.sold else "on_offer"
    if latest_offer.status == "finished":
        return "sold"
    return "off_market"


@dataclass(frozen=True, slots=True)
class OfferSales:
    """One sell offer and what was confirmed on it."""

    offer_id: str
    lender_id: str
    loan_id: str
    amount: int
    confirmed: int
    all_or_nothing: bool


def offer_sales(conn: Connection, currency: str) -> list[OfferSales]:
    """Every sell offer of a currency (open or not) with the amount confirmed on it."""
    confirmed = (
        select(bids.c.sell_offer_id, func.sum(bids.c.amount).label("confirmed"))
        .where(bids.c.status == "confirmed")
        .group_by(bids.c.sell_offer_id)
        .subquery()
    )
    rows = conn.execute(
        select(
            sell_offers.c.offer_id,
            sell_offers.c.lender_id,
            sell_offers.c.loan_id,
            sell_offers.c.amount,
            func.coalesce(confirmed.c.confirmed, 0),
            sell_offers.c.all_or_nothing,
        )
        .select_from(sell_offers.outerjoin(confirmed, confirmed.c.sell_offer_id == sell_offers.c.offer_id))
        .where(sell_offers.c.currency == currency)
        .order_by(sell_offers.c.seq)
    ).tuples()
    return [OfferSales(o, lender, loan, int(a), int(c), bool(aon)) for o, lender, loan, a, c, aon in rows]
