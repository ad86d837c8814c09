"""The ledger's read side: the query ports the market and trading use (an investor's available cash, the
holdings of a set of portfolios) and the reports investors and lenders read (statements, holdings per loan, net
annual return, lender settlement by day).

Statements walk an account's postings by ``seq`` in chunks, so an export of millions of movements holds one
chunk in memory at a time.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from tranche.ledger import chart
from tranche.ledger.chart import Code
from tranche.ledger.domain import AccountKind, from_micros, to_micros
from tranche.ledger.messages import CashPosition, Movement
from tranche.ledger.returns import xirr
from tranche.ledger.store import NEVER_HELD, Activity, HoldingStatus, LedgerStore

_FAR_FUTURE = 2**62
_HELD = tuple(s for s in HoldingStatus if s not in NEVER_HELD and s is not HoldingStatus.RESERVED)


@dataclass(frozen=True, slots=True)
class PortfolioHolding:
    """One bid a portfolio holds (or has reserved): ``invested`` is the principal it bought, ``held`` the
    principal it still holds (what repayments and write-offs left; 0 while only reserved), ``written_off`` what
    it lost. Minor units of ``currency``; ``investor_rate`` the annual rate agreed for the bid."""

    bid_id: str
    portfolio_id: str
    investor_id: str
    lender_id: str
    loan_id: str
    currency: str
    invested: int
    held: int
    written_off: int
    status: HoldingStatus
    investor_rate: Decimal


@dataclass(frozen=True, slots=True)
class Holding:
    """What an investor holds of one loan: principal still held, principal invested, losses written off."""

    lender_id: str
    loan_id: str
    currency: str
    held_principal: int
    invested: int
    written_off: int
    bids: int
    loan_status: str
    loan_outstanding_principal: int | None


@dataclass(frozen=True, slots=True)
class SettlementDay:
    """A lender's settlement account over one UTC day; ``closing`` is what the platform owes the lender."""

    day: date
    funded: int
    principal_paid: int
    interest_paid: int
    margin: int
    payouts: int
    received: int
    net: int
    closing: int


class Statement:
    """An account's movements between ``start`` and ``end`` with the balances either side.

    Iterate it for chunks of :class:`Movement` (each a list of at most ``chunk_size``); ``opening`` and
    ``closing`` are known up front.
    """

    def __init__(
        self, store: LedgerStore, account_id: str, currency: str, start_us: int, end_us: int, chunk_size: int
    ) -> None:
        self.store = store
        self.account_id = account_id
        self.currency = currency
        self.start_us = start_us
        self.end_us = end_us
        self.chunk_size = chunk_size
        self.opening = store.net_posted(account_id, 0, start_us)
        self.closing = self.opening + store.net_posted(account_id, start_us, end_us)

    def __iter__(self) -> Iterator[list[Movement]]:
        balance = self.opening
        after = 0
        while True:
            postings = self.store.postings(
                self.account_id, self.start_us, self.end_us, after, self.chunk_size
            )
            if not postings:
                return
            chunk: list[Movement] = []
            for p in postings:
                balance += p.amount
                chunk.append(
                    Movement(
                        p.seq, p.transfer_id, from_micros(p.created_us), p.code, p.ref, p.amount, balance
                    )
                )
            after = chunk[-1].seq
            yield chunk


@dataclass(frozen=True, slots=True)
class MarketPositions:
    """The ledger's side of the market's checks for one currency (minor units): funding posted and funding still
    pending (reserved, not yet posted) per loan ``(lender, loan)``, principal held per portfolio (posted, and
    reserved at its amount), and the currency's sums over every account, posted and pending (both zero)."""

    funded: dict[tuple[str, str], int]
    settling: dict[tuple[str, str], int]
    held: dict[str, int]
    net_posted: int
    net_pending: int


class LedgerReports:
    """Read side of the ledger; built by the composition root with the store."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store

    # -- query ports ------------------------------------------------------------------------------------------

    def available_cash(self, investor_id: str) -> tuple[CashPosition, ...]:
        """The investor's available cash in every currency it has an account in (ordered by currency)."""
        accounts = self.store.accounts_of(investor_id, AccountKind.INVESTOR_CASH)
        return tuple(
            CashPosition(investor_id, a.currency, a.available)
            for a in sorted(accounts, key=lambda a: a.currency)
        )

    def available_cash_of(self, investor_ids: Collection[str], currency: str) -> dict[str, int]:
        """The available cash in ``currency`` of each of these investors (0 for one without an account), in one
        query: what the gap analyzer plans within."""
        ids = {chart.investor_cash(investor, currency).id: investor for investor in investor_ids}
        found = self.store.accounts(ids)
        return {investor: found[a].available if a in found else 0 for a, investor in ids.items()}

    def market_positions(self, currency: str) -> MarketPositions:
        """What the market's checks compare on the ledger's side, for one currency (see :class:`MarketPositions`)."""
        funded: dict[tuple[str, str], int] = {}
        settling: dict[tuple[str, str], int] = {}
        held: dict[str, int] = {}
        statuses = [s for s in HoldingStatus if s not in NEVER_HELD]
        for row, balance in self.store.holdings_with_balance(statuses=statuses, currency=currency):
            key = (row.lender_id, row.loan_id)
            if row.status is HoldingStatus.RESERVED:
                settling[key] = settling.get(key, 0) + row.amount
                held[row.portfolio_id] = held.get(row.portfolio_id, 0) + row.amount
            else:
                funded[key] = funded.get(key, 0) + row.amount
                held[row.portfolio_id] = held.get(row.portfolio_id, 0) + balance
        net_posted, net_pending = self.store.net_by_currency().get(currency, (0, 0))
        return MarketPositions(
            funded, settling, {k: v for k, v in held.items() if v}, net_posted, net_pending
        )

    def portfolio_holdings(
        self, portfolio_ids: Collection[str], *, include_released: bool = False
    ) -> list[PortfolioHolding]:
        """Every holding of these portfolios, reserved ones included, ordered by bid id; bids whose reservation
        was released (rolled back, expired) only with ``include_released``. One indexed query."""
        statuses = None if include_released else [s for s in HoldingStatus if s not in NEVER_HELD]
        return [
            PortfolioHolding(
                row.bid_id,
                row.portfolio_id,
                row.investor_id,
                row.lender_id,
                row.loan_id,
                row.currency,
                row.amount,
                held,
                row.written_off,
                row.status,
                row.investor_rate,
            )
            for row, held in self.store.holdings_with_balance(portfolio_ids=portfolio_ids, statuses=statuses)
        ]

    def activity(self) -> Activity:
        """Batches written and transfers stored so far, and reservations open now (for the metrics)."""
        return self.store.activity()

    # -- reports ----------------------------------------------------------------------------------------------

    def statement(
        self,
        investor_id: str,
        currency: str,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        chunk_size: int = 1_000,
    ) -> Statement:
        """Every posted movement of the investor's cash in ``[start, end)``, with opening and closing balances."""
        return Statement(
            self.store,
            chart.investor_cash(investor_id, currency).id,
            currency,
            to_micros(start) if start else 0,
            to_micros(end) if end else _FAR_FUTURE,
            chunk_size,
        )

    def holdings(self, investor_id: str) -> list[Holding]:
        """Per loan: the principal the investor still holds, what they invested, and what was written off
        (funded bids only: a reservation is not yet a holding)."""
        rows = self.store.holdings_with_balance(investor_id=investor_id, statuses=_HELD)
        per_loan: dict[tuple[str, str, str], list[Any]] = {}
        for row, held in rows:
            entry = per_loan.setdefault((row.lender_id, row.loan_id, row.currency), [0, 0, 0, 0])
            entry[0] += held
            entry[1] += row.amount
            entry[2] += row.written_off
            entry[3] += 1
        loans = {}
        for lender_id in {lender for lender, _, _ in per_loan}:
            found = self.store.loans(lender_id, [loan for lender, loan, _ in per_loan if lender == lender_id])
            loans.update({(lender_id, loan_id): row for loan_id, row in found.items()})
        holdings = []
        for (lender_id, loan_id, currency), (held, invested, lost, bids) in sorted(per_loan.items()):
            loan = loans.get((lender_id, loan_id))
            holdings.append(
                Holding(
                    lender_id,
                    loan_id,
                    currency,
                    held,
                    invested,
                    lost,
                    bids,
                    loan.status if loan else "active",
                    loan.outstanding_principal if loan else None,
                )
            )
        return holdings

    def net_annual_return(self, investor_id: str, currency: str, as_of: datetime) -> Decimal | None:
        """XIRR of the investor's deposits (in) and withdrawals (out), valuing at ``as_of`` the cash left and
        the principal still held: written-off principal counts as lost, and money put in that nothing is left of
        is a return of -1. None without any deposit."""
        flows: list[tuple[date, int]] = []
        statement = self.statement(investor_id, currency, end=as_of)
        for chunk in statement:
            for m in chunk:
                if m.code in (Code.DEPOSIT, Code.WITHDRAWAL):
                    flows.append((m.at.date(), -m.amount))
        if not flows:
            return None
        held = sum(h.held_principal for h in self.holdings(investor_id) if h.currency == currency)
        flows.append((as_of.astimezone(UTC).date(), statement.closing + held))
        rate = xirr(flows)
        if (
            rate is None
            and sum(amount for _, amount in flows) < 0
            and all(amount <= 0 for _, amount in flows)
        ):
            return Decimal(-1)  # all put in, nothing back nor left: the whole of it lost
        return rate

    def lender_settlement(
        self, lender_id: str, currency: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[SettlementDay]:
        """The lender's settlement account, one row per UTC day that has movements."""
        statement = Statement(
            self.store,
            chart.lender_settlement(lender_id, currency).id,
            currency,
            to_micros(start) if start else 0,
            to_micros(end) if end else _FAR_FUTURE,
            5_000,
        )
        kinds = {
            Code.FUNDING: "funded",
            Code.PRINCIPAL: "principal_paid",
            Code.INTEREST: "interest_paid",
            Code.MARGIN: "margin",
            Code.PAYOUT: "payouts",
            Code.LENDER_PAYMENT: "received",
        }
        days: list[SettlementDay] = []
        current: dict[str, Any] | None = None
        for chunk in statement:
            for m in chunk:
                day = m.at.date()
                if current is None or current["day"] != day:
                    if current is not None:
                        days.append(SettlementDay(**current))
                    current = dict.fromkeys((*kinds.values(), "net"), 0)
                    current["day"] = day
                key = kinds.get(m.code)
                if key is not None:
                    current[key] += abs(m.amount)
                current["net"] += m.amount
                current["closing"] = m.balance
        if current is not None:
            days.append(SettlementDay(**current))
        return days
