"""Trading's adapters: the portfolio store on SQL tables (SQLite or PostgreSQL), and the market's ports to the
ledger (its query ports for holdings and cash, its reservations over the bus)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, Row, select, update

from tranche.bus import Bus, BusError, EventCodec
from tranche.ledger import HoldingStatus, LedgerReports, ReserveBids, request_reservations
from tranche.matching import OfferMatched
from tranche.shared.ids import new_id
from tranche.trading.domain import HeldPrincipal, Portfolio, PortfolioStatus
from tranche.trading.errors import PortfolioNotFoundError
from tranche.trading.events import PortfolioChanged
from tranche.trading.market import LedgerUnavailableError, ReservationAnswer
from tranche.trading.store import (
    FillRow,
    FillStatus,
    OfferRow,
    OfferStatus,
    buckets_from_json,
    buckets_to_json,
)
from tranche.trading.tables import buy_offers, fills, portfolios

Publish = Callable[[Connection, object], None]


class SqlPortfolioStore:
    """:class:`tranche.trading.store.PortfolioStore` on the store; ``publish`` writes an event to the outbox in
    the caller's transaction."""

    def __init__(self, engine: Engine, publish: Publish) -> None:
        self.engine = engine
        self.publish = publish

    def add(self, portfolio: Portfolio, now: datetime, change: PortfolioChanged) -> None:
        with self.engine.begin() as conn:
            conn.execute(portfolios.insert().values(**_row(portfolio), created_at=now, updated_at=now))
            self.publish(conn, change)

    def get(self, portfolio_id: str) -> Portfolio:
        with self.engine.connect() as conn:
            row = conn.execute(select(portfolios).where(portfolios.c.portfolio_id == portfolio_id)).first()
        if row is None:
            raise PortfolioNotFoundError(f"no portfolio {portfolio_id}", record=portfolio_id)
        return _portfolio(row)

    def list_for(self, investor_id: str) -> list[Portfolio]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(portfolios)
                .where(portfolios.c.investor_id == investor_id)
                .order_by(portfolios.c.created_at)
            )
            return [_portfolio(row) for row in rows]

    def replace(self, portfolio: Portfolio, now: datetime, change: PortfolioChanged) -> None:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(portfolios)
                .where(portfolios.c.portfolio_id == portfolio.portfolio_id)
                .values(**_row(portfolio), updated_at=now)
            )
            if result.rowcount == 0:
                raise PortfolioNotFoundError(
                    f"no portfolio {portfolio.portfolio_id}", record=portfolio.portfolio_id
                )
            self.publish(conn, change)

    def advance_cycle(self, portfolio_id: str, cycle: int, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(portfolios)
                .where(portfolios.c.portfolio_id == portfolio_id)
                .values(cycle=cycle, updated_at=now)
            )

    def ids_in(self, currency: str) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(portfolios.c.portfolio_id)
                .where(portfolios.c.currency == currency)
                .order_by(portfolios.c.created_at, portfolios.c.portfolio_id)
            )
            return [row.portfolio_id for row in rows]

    def active_of(self, investor_id: str, currency: str) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(portfolios.c.portfolio_id)
                .where(
                    portfolios.c.investor_id == investor_id,
                    portfolios.c.currency == currency,
                    portfolios.c.status == PortfolioStatus.ACTIVE.value,
                )
                .order_by(portfolios.c.created_at, portfolios.c.portfolio_id)
            )
            return [row.portfolio_id for row in rows]

    def active_ids(self) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(portfolios.c.portfolio_id)
                .where(portfolios.c.status == PortfolioStatus.ACTIVE.value)
                .order_by(portfolios.c.created_at, portfolios.c.portfolio_id)
            )
            return [row.portfolio_id for row in rows]

    def add_offers(self, offers: Sequence[OfferRow], now: datetime) -> None:
        if not offers:
            return
        with self.engine.begin() as conn:
            conn.execute(
                buy_offers.insert(),
                [
                    {
                        "buy_offer_id": o.buy_offer_id,
                        "portfolio_id": o.portfolio_id,
                        "portfolio_version": o.portfolio_version,
                        "bucket_id": o.bucket_id,
                        "cycle": o.cycle,
                        "amount": o.amount,
                        "status": o.status,
                        "created_at": now,
                    }
                    for o in offers
                ],
            )

    def set_offer_status(self, buy_offer_ids: Iterable[str], status: OfferStatus) -> None:
        ids = list(buy_offer_ids)
        if ids:
            with self.engine.begin() as conn:
                conn.execute(
                    update(buy_offers).where(buy_offers.c.buy_offer_id.in_(ids)).values(status=status)
                )

    def offers(self, portfolio_id: str) -> list[OfferRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(buy_offers)
                .where(buy_offers.c.portfolio_id == portfolio_id)
                .order_by(buy_offers.c.cycle, buy_offers.c.buy_offer_id)
            )
            return [_offer(row) for row in rows]

    def owners(self, buy_offer_ids: Iterable[str]) -> dict[str, OfferRow]:
        ids = list(set(buy_offer_ids))
        if not ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(buy_offers).where(buy_offers.c.buy_offer_id.in_(ids)))
            return {row.buy_offer_id: _offer(row) for row in rows}

    def add_fills(self, rows: Sequence[FillRow]) -> None:
        if not rows:
            return
        with self.engine.begin() as conn:
            # a redelivered match is recorded once
            seen = {
                row.bid_id
                for row in conn.execute(
                    select(fills.c.bid_id).where(fills.c.bid_id.in_([r.bid_id for r in rows]))
                )
            }
            rows = [r for r in rows if r.bid_id not in seen]
            if not rows:
                return
            conn.execute(
                fills.insert(),
                [
                    {
                        "bid_id": r.bid_id,
                        "buy_offer_id": r.buy_offer_id,
                        "portfolio_id": r.portfolio_id,
                        "bucket_id": r.bucket_id,
                        "amount": r.amount,
                        "status": r.status,
                    }
                    for r in rows
                ],
            )

    def set_fill_status(self, bid_ids: Iterable[str], status: FillStatus) -> set[str]:
        ids = list(bid_ids)
        if not ids:
            return set()
        with self.engine.begin() as conn:
            conn.execute(update(fills).where(fills.c.bid_id.in_(ids)).values(status=status))
            rows = conn.execute(select(fills.c.portfolio_id).where(fills.c.bid_id.in_(ids)).distinct())
            return {row.portfolio_id for row in rows}

    def fills(self, portfolio_id: str) -> list[FillRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(fills).where(fills.c.portfolio_id == portfolio_id).order_by(fills.c.bid_id)
            )
            return [
                FillRow(r.bid_id, r.buy_offer_id, r.portfolio_id, r.bucket_id, r.amount, r.status)
                for r in rows
            ]


def _row(p: Portfolio) -> dict[str, Any]:
    return {
        "portfolio_id": p.portfolio_id,
        "investor_id": p.investor_id,
        "currency": p.currency,
        "total": p.total,
        "max_per_loan": p.max_per_loan,
        "min_ticket": p.min_ticket,
        "tranche_percent": str(p.tranche_percent),
        "tolerance_percent": str(p.tolerance_percent),
        "status": p.status.value,
        "cycle": p.cycle,
        "version": p.version,
        "buckets": buckets_to_json(p.buckets),
        "keep_uninvested": p.keep_uninvested,
    }


def _portfolio(row: Row[Any]) -> Portfolio:
    return Portfolio(
        row.portfolio_id,
        row.investor_id,
        row.currency,
        row.total,
        row.max_per_loan,
        row.min_ticket,
        buckets_from_json(row.buckets),
        PortfolioStatus(row.status),
        Decimal(row.tranche_percent),
        Decimal(row.tolerance_percent),
        row.cycle,
        row.version,
        row.keep_uninvested,
    )


def _offer(row: Row[Any]) -> OfferRow:
    return OfferRow(
        row.buy_offer_id,
        row.portfolio_id,
        row.portfolio_version,
        row.bucket_id,
        row.cycle,
        row.amount,
        row.status,
    )


class LedgerQueries:
    """What trading reads of the ledger, through the ledger's query ports: investors' available cash and the
    principal each funded bid still holds (:class:`tranche.trading.LedgerView`)."""

    def __init__(self, reports: LedgerReports) -> None:
        self.reports = reports

    def funded(self, portfolio_id: str) -> dict[str, HeldPrincipal]:
        return {
            h.bid_id: HeldPrincipal(h.held, h.written_off)
            for h in self.reports.portfolio_holdings([portfolio_id])
            if h.status is not HoldingStatus.RESERVED
        }

    def available(self, investor_id: str, currency: str) -> int:
        return self.reports.available_cash_of([investor_id], currency)[investor_id]


class BusReservations:
    """The market's reservations, asked of the ledger role over the bus (:func:`tranche.ledger.request_reservations`).

    The market steps on worker threads; each request is handed to the event loop the bus runs on, which
    :meth:`attach` names once messaging has started. No answer (no ledger role, a timeout, the bus away) is a
    :class:`LedgerUnavailableError`: the bids stay placed and are asked for again (a reservation is idempotent by bid).
    """

    def __init__(self, bus: Bus, codec: EventCodec, *, timeout: float = 30.0) -> None:
        self.bus = bus
        self.codec = codec
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def reserve(self, matches: Sequence[OfferMatched]) -> ReservationAnswer:
        loop = self._loop
        if loop is None or loop.is_closed():
            raise LedgerUnavailableError(
                "the market's messaging is not running: no reservation can be asked for"
            )
        command = ReserveBids(new_id("rsv"), tuple(matches))
        asked = asyncio.run_coroutine_threadsafe(
            request_reservations(self.bus, self.codec, command, timeout=self.timeout), loop
        )
        try:
            answer = asked.result(self.timeout + 5)
        except (BusError, TimeoutError, concurrent.futures.CancelledError) as error:
            asked.cancel()
            raise LedgerUnavailableError(f"the ledger did not answer the reservation: {error}") from error
        return ReservationAnswer(frozenset(answer.reserved), {r.bid_id: r.code for r in answer.refused})
