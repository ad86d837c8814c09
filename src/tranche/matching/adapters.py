"""The matching record on the store (SQLAlchemy Core, SQLite or PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, Row, bindparam, func, or_, select, update

from tranche.matching.criteria import Criteria, LoanTraits
from tranche.matching.events import Bid, BidsRolledBack, LoanFunded, OfferMatched, OffersRefused
from tranche.matching.record import OfferStatus
from tranche.matching.tables import bids, buy_offers, refused_offers, sell_offers
from tranche.matching.values import BidRecord, BuyOffer, Changes, DurableState, MatchEvent, SellOffer

Publish = Callable[[Connection, object], None]


class SqlMatchingRecord:
    """:class:`tranche.matching.record.MatchingRecord` on SQL tables; one transaction per step.

    With ``publish`` (the outbox), a step's events are published in the transaction that records it, so none
    is lost or sent for a step that did not happen.
    """

    def __init__(self, engine: Engine, publish: Publish | None = None) -> None:
        self.engine = engine
        self.publish = publish

    def save(self, changes: Changes, events: Sequence[MatchEvent]) -> None:
        new_bids: list[dict[str, Any]] = []
        statuses: list[dict[str, Any]] = []
        for event in events:
            if isinstance(event, OfferMatched):
                new_bids.extend(_bid_row(bid, event) for bid in event.bids)
            elif isinstance(event, LoanFunded):
                statuses.extend({"key": bid_id, "new": "confirmed"} for bid_id in event.bid_ids)
            elif isinstance(event, BidsRolledBack):
                statuses.extend({"key": bid_id, "new": "rolled_back"} for bid_id in event.bid_ids)
        with self.engine.begin() as conn:
            if changes.sells:
                conn.execute(sell_offers.insert(), [_sell_row(seq, offer) for seq, offer in changes.sells])
            if changes.buys:
                conn.execute(buy_offers.insert(), [_buy_row(seq, offer) for seq, offer in changes.buys])
            if new_bids:
                conn.execute(bids.insert(), new_bids)
            if statuses:
                conn.execute(
                    update(bids).where(bids.c.bid_id == bindparam("key")).values(status=bindparam("new")),
                    statuses,
                )
            for status, ids in (("withdrawn", changes.withdrawn), ("finished", changes.finished)):
                if ids:
                    conn.execute(
                        update(sell_offers).where(sell_offers.c.offer_id.in_(ids)).values(status=status)
                    )
                    conn.execute(
                        update(buy_offers).where(buy_offers.c.buy_offer_id.in_(ids)).values(status=status)
                    )
            if self.publish is not None:
                for event in events:
                    self.publish(conn, event)

    def statuses(self, offer_ids: Sequence[str]) -> dict[str, OfferStatus]:
        ids = list(offer_ids)
        if not ids:
            return {}
        found: dict[str, OfferStatus] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(
                select(sell_offers.c.offer_id, sell_offers.c.status).where(sell_offers.c.offer_id.in_(ids))
            ):
                found[row.offer_id] = row.status
            for row in conn.execute(
                select(buy_offers.c.buy_offer_id, buy_offers.c.status).where(
                    buy_offers.c.buy_offer_id.in_(ids)
                )
            ):
                found[row.buy_offer_id] = row.status
        return found

    def load(self) -> DurableState:
        with self.engine.connect() as conn:
            sells = [
                (row.seq, _sell_from(row))
                for row in conn.execute(
                    select(sell_offers).where(sell_offers.c.status == "open").order_by(sell_offers.c.seq)
                )
            ]
            buys = [
                (row.seq, _buy_from(row))
                for row in conn.execute(
                    select(buy_offers).where(buy_offers.c.status == "open").order_by(buy_offers.c.seq)
                )
            ]
            open_sells = select(sell_offers.c.offer_id).where(sell_offers.c.status == "open")
            open_buys = select(buy_offers.c.buy_offer_id).where(buy_offers.c.status == "open")
            records = [
                BidRecord(
                    Bid(
                        row.bid_id,
                        row.buy_offer_id,
                        row.portfolio_id,
                        row.investor_id,
                        row.amount,
                        Decimal(row.investor_rate),
                        Decimal(row.lender_rate),
                        Decimal(row.margin),
                    ),
                    row.sell_offer_id,
                    row.match_id,
                    row.status,
                )
                for row in conn.execute(
                    select(bids)
                    .where(or_(bids.c.sell_offer_id.in_(open_sells), bids.c.buy_offer_id.in_(open_buys)))
                    .order_by(bids.c.bid_id)
                )
            ]
        return DurableState(tuple(sells), tuple(buys), tuple(records))


def _sell_row(seq: int, offer: SellOffer) -> dict[str, Any]:
    t = offer.traits
    return {
        "offer_id": offer.offer_id,
        "seq": seq,
        "status": "open",
        "currency": offer.currency,
        "lender_id": offer.lender_id,
        "loan_id": offer.loan_id,
        "loan_version": offer.loan_version,
        "amount": offer.amount,
        "lender_rate": str(offer.lender_rate),
        "margin": str(offer.margin),
        "all_or_nothing": offer.all_or_nothing,
        "product": offer.product,
        "country": t.country,
        "borrower_age": t.borrower_age,
        "credit_score": t.credit_score,
        "income_monthly": t.income_monthly,
        "risk_group": t.risk_group,
        "term_months": t.term_months,
    }


def _sell_from(row: Row[Any]) -> SellOffer:
    return SellOffer(
        row.offer_id,
        row.lender_id,
        row.loan_id,
        row.loan_version,
        row.currency,
        row.amount,
        Decimal(row.lender_rate),
        Decimal(row.margin),
        bool(row.all_or_nothing),
        LoanTraits(
            row.country,
            row.borrower_age,
            row.credit_score,
            row.income_monthly,
            row.risk_group,
            row.term_months,
            row.lender_id,
        ),
        row.product,
    )


def _buy_row(seq: int, offer: BuyOffer) -> dict[str, Any]:
    return {
        "buy_offer_id": offer.buy_offer_id,
        "seq": seq,
        "status": "open",
        "currency": offer.currency,
        "portfolio_id": offer.portfolio_id,
        "investor_id": offer.investor_id,
        "bucket_id": offer.bucket_id,
        "cycle": offer.cycle,
        "amount": offer.amount,
        "min_ticket": offer.min_ticket,
        "per_loan_cap": offer.per_loan_cap,
        "criteria": json.dumps(offer.criteria.to_dict(), sort_keys=True),
    }


def _buy_from(row: Row[Any]) -> BuyOffer:
    return BuyOffer(
        row.buy_offer_id,
        row.portfolio_id,
        row.investor_id,
        row.bucket_id,
        row.cycle,
        row.currency,
        row.amount,
        row.min_ticket,
        row.per_loan_cap,
        Criteria.from_dict(json.loads(row.criteria)),
    )


def _bid_row(bid: Bid, event: OfferMatched) -> dict[str, Any]:
    return {
        "bid_id": bid.bid_id,
        "match_id": event.match_id,
        "sell_offer_id": event.sell_offer_id,
        "buy_offer_id": bid.buy_offer_id,
        "portfolio_id": bid.portfolio_id,
        "investor_id": bid.investor_id,
        "amount": bid.amount,
        "investor_rate": str(bid.investor_rate),
        "lender_rate": str(bid.lender_rate),
        "margin": str(bid.margin),
        "status": "placed",
    }


def confirmed_amounts(conn: Connection, lender_id: str, loan_ids: Sequence[str]) -> dict[str, int]:
    """What investors bought of each loan, over all its versions (confirmed bids, in minor units)."""
    if not loan_ids:
        return {}
    query = (
        select(sell_offers.c.loan_id, func.sum(bids.c.amount))
        .join(bids, bids.c.sell_offer_id == sell_offers.c.offer_id)
        .where(
            sell_offers.c.lender_id == lender_id,
            sell_offers.c.loan_id.in_(list(loan_ids)),
            bids.c.status == "confirmed",
        )
        .group_by(sell_offers.c.loan_id)
    )
    return {loan_id: int(total) for loan_id, total in conn.execute(query).tuples().all()}


def record_refusals(conn: Connection, event: OffersRefused, now: datetime) -> int:
    """Store the loan versions the market refused (each once: a repeated event adds nothing); returns how many
    were new."""
    keys = [(r.loan_id, r.loan_version) for r in event.loans]
    if not keys:
        return 0
    known = {
        (row.loan_id, row.loan_version)
        for row in conn.execute(
            select(refused_offers.c.loan_id, refused_offers.c.loan_version).where(
                refused_offers.c.lender_id == event.lender_id,
                refused_offers.c.loan_id.in_([k for k, _ in keys]),
            )
        )
    }
    rows = [
        {
            "lender_id": event.lender_id,
            "loan_id": r.loan_id,
            "loan_version": r.loan_version,
            "batch_id": event.batch_id,
            "field": r.field,
            "reason": r.reason,
            "refused_at": now,
        }
        for r in event.loans
        if (r.loan_id, r.loan_version) not in known
    ]
    if rows:
        conn.execute(refused_offers.insert(), rows)
    return len(rows)
