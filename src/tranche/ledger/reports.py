"""Reports read from the ledger: investor statements, holdings, net annual return, lender settlement by day.

Reads run on read-only connections (on SQLite they do not queue behind the writer) and walk transfers by
``seq`` in chunks, so an export of millions of movements holds one chunk in memory at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine

from tranche.ledger import chart
from tranche.ledger.adapters import from_micros, to_micros
from tranche.ledger.chart import Code
from tranche.ledger.returns import xirr
from tranche.store.engine import reading

_FAR_FUTURE = 2**62


@dataclass(frozen=True, slots=True)
class Movement:
    """One posted movement on an account: ``amount`` is signed (credit positive), ``balance`` after it."""

    seq: int
    transfer_id: str
    at: datetime
    code: str
    ref: str
    amount: int
    balance: int


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
        self, engine: Engine, account_id: str, currency: str, start_us: int, end_us: int, chunk_size: int
    ) -> None:
        self.engine = engine
        self.account_id = account_id
        self.currency = currency
        self.start_us = start_us
        self.end_us = end_us
        self.chunk_size = chunk_size
        with reading(engine) as conn:
            self.opening = _net(conn, account_id, 0, start_us)
            self.closing = self.opening + _net(conn, account_id, start_us, end_us)

    def __iter__(self) -> Iterator[list[Movement]]:
        balance = self.opening
        after = 0
        while True:
            with reading(self.engine) as conn:
                rows = _movements(conn, self.account_id, self.start_us, self.end_us, after, self.chunk_size)
            if not rows:
                return
            chunk: list[Movement] = []
            for seq, transfer_id, debit, amount, code, ref, created in rows:
                signed = -int(amount) if debit == self.account_id else int(amount)
                balance += signed
                chunk.append(
                    Movement(int(seq), transfer_id, from_micros(int(created)), code, ref, signed, balance)
                )
            after = chunk[-1].seq
            yield chunk


def _placeholder(conn: Connection) -> str:
    return "?" if conn.dialect.name == "sqlite" else "%s"


def _net(conn: Connection, account_id: str, start_us: int, end_us: int) -> int:
    p = _placeholder(conn)
    row = conn.exec_driver_sql(
        "SELECT (SELECT COALESCE(SUM(amount), 0) FROM ledger_transfers WHERE credit_account_id = "
        f"{p} AND phase IN ('single', 'post') AND created_at >= {p} AND created_at < {p}) - "
        "(SELECT COALESCE(SUM(amount), 0) FROM ledger_transfers WHERE debit_account_id = "
        f"{p} AND phase IN ('single', 'post') AND created_at >= {p} AND created_at < {p})",
        (account_id, start_us, end_us, account_id, start_us, end_us),
    ).scalar_one()
    return int(row)


def _movements(
    conn: Connection, account_id: str, start_us: int, end_us: int, after: int, limit: int
) -> list[Any]:
    p = _placeholder(conn)
    columns = "seq, id, debit_account_id, amount, code, ref, created_at"
    where = f"AND phase IN ('single', 'post') AND seq > {p} AND created_at >= {p} AND created_at < {p}"
    return list(
        conn.exec_driver_sql(
            f"SELECT * FROM (SELECT {columns} FROM ledger_transfers WHERE debit_account_id = {p} {where} "
            f"UNION ALL SELECT {columns} FROM ledger_transfers WHERE credit_account_id = {p} {where}) AS m "
            f"ORDER BY seq LIMIT {p}",
            (account_id, after, start_us, end_us, account_id, after, start_us, end_us, limit),
        ).all()
    )


class LedgerReports:
    """Read-side of the ledger; built by the composition root with the engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
            self.engine,
            chart.investor_cash(investor_id, currency).id,
            currency,
            to_micros(start) if start else 0,
            to_micros(end) if end else _FAR_FUTURE,
            chunk_size,
        )

    def holdings(self, investor_id: str) -> list[Holding]:
        """Per loan: the principal the investor still holds, what they invested, and what was written off."""
        with reading(self.engine) as conn:
            p = _placeholder(conn)
            rows = conn.exec_driver_sql(
                "SELECT h.lender_id, h.loan_id, h.currency, SUM(a.credits_posted - a.debits_posted), SUM(h.amount), "
                "COUNT(*), MAX(l.status), MAX(l.outstanding_principal), "
                "SUM((SELECT COALESCE(SUM(t.amount), 0) FROM ledger_transfers t "
                f"     WHERE t.debit_account_id = h.account_id AND t.code = '{Code.WRITE_OFF}')) "
                "FROM ledger_holdings h JOIN ledger_accounts a ON a.id = h.account_id "
                "LEFT JOIN ledger_loans l ON l.lender_id = h.lender_id AND l.loan_id = h.loan_id "
                f"WHERE h.investor_id = {p} AND h.status IN ('active', 'repaid', 'defaulted', 'written_off') "
                "GROUP BY h.lender_id, h.loan_id, h.currency ORDER BY h.lender_id, h.loan_id",
                (investor_id,),
            ).all()
        return [
            Holding(
                r[0],
                r[1],
                r[2],
                int(r[3]),
                int(r[4]),
                int(r[8]),
                int(r[5]),
                r[6] or "active",
                None if r[7] is None else int(r[7]),
            )
            for r in rows
        ]

    def net_annual_return(self, investor_id: str, currency: str, as_of: datetime) -> Decimal | None:
        """XIRR of the investor's deposits (in) and withdrawals (out), valuing at ``as_of`` the cash left and
        the principal still held (written-off principal counts as lost). None without both kinds of flow."""
        flows: list[tuple[date, int]] = []
        statement = self.statement(investor_id, currency, end=as_of)
        for chunk in statement:
            for m in chunk:
                if m.code in (Code.DEPOSIT, Code.WITHDRAWAL):
                    flows.append((m.at.date(), -m.amount))
        held = sum(h.held_principal for h in self.holdings(investor_id) if h.currency == currency)
        flows.append((as_of.astimezone(UTC).date(), statement.closing + held))
        return xirr(flows)

    def lender_settlement(
        self, lender_id: str, currency: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[SettlementDay]:
        """The lender's settlement account, one row per UTC day that has movements."""
        statement = Statement(
            self.engine,
            chart.lender_settlement(lender_id, currency).id,
            currency,
            to_micros(start) if start else 0,
            to_micros(end) if end else _FAR_FUTURE,
            5_000,
        )
        days: list[SettlementDay] = []
        current: dict[str, Any] | None = None
        for chunk in statement:
            for m in chunk:
                day = m.at.date()
                if current is None or current["day"] != day:
                    if current is not None:
                        days.append(SettlementDay(**current))
                    current = dict.fromkeys(
                        ("funded", "principal_paid", "interest_paid", "margin", "payouts", "received", "net"),
                        0,
                    )
                    current["day"] = day
                key = {
                    Code.FUNDING: "funded",
                    Code.PRINCIPAL: "principal_paid",
                    Code.INTEREST: "interest_paid",
                    Code.MARGIN: "margin",
                    Code.PAYOUT: "payouts",
                    Code.LENDER_PAYMENT: "received",
                }.get(m.code)
                if key is not None:
                    current[key] += abs(m.amount)
                current["net"] += m.amount
                current["closing"] = m.balance
        if current is not None:
            days.append(SettlementDay(**current))
        return days
