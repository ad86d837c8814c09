"""The ledger's store in SQLite or PostgreSQL (:class:`SqlLedgerStore`), behind the port of
:mod:`tranche.ledger.store`.

A batch is applied in a handful of statements whatever its size: load the accounts it names (locked on
PostgreSQL, in id order so that two writers cannot deadlock; SQLite has one writer at a time), the stored
transfers sharing its ids and the pending transfers it resolves; plan it with the pure rule; then write the new
transfers, the opened accounts, the new totals of the others, and the open reservations. The database checks on
its own that every currency sums to zero (see :mod:`tranche.ledger.tables`).

Every transaction is durable when it commits: on SQLite it runs with ``synchronous=FULL`` (the write-ahead log
is synced at each commit: a power cut cannot take back a deposit the API acknowledged), on PostgreSQL with
``synchronous_commit=on`` whatever the server's default. A batch of thousands of transfers pays one sync, and
on SQLite so do the flows that arrive while another commits (group commit, see :meth:`SqlLedgerStore._atomic`).

Statements are written for the driver (``exec_driver_sql``), not built with SQLAlchemy: a batch reads and writes
tens of thousands of rows, and building statements and rows would cost more than the database does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from tranche.bus.outbox import add_to_outbox
from tranche.ledger.domain import Account, AccountKind, Phase, Transfer, from_micros, to_micros
from tranche.ledger.errors import LedgerError, UnbalancedLedgerError
from tranche.ledger.messages import PortfolioDrifted
from tranche.ledger.planning import BatchPlan, Snapshot, expires_at, needed_ids, plan_batch
from tranche.ledger.store import (
    Activity,
    Drift,
    HoldingRow,
    HoldingStatus,
    LedgerStore,
    LedgerTransaction,
    LoanRow,
    Posting,
    check_proposals,
    folded,
)
from tranche.shared.clock import Clock
from tranche.shared.messages import Event
from tranche.store.engine import durably, larger_cache, reading

T = TypeVar("T")

_ACCOUNT_COLUMNS = (
    "id, currency, kind, debits_must_not_exceed_credits, credits_must_not_exceed_debits, owner_id, loan_id, "
    "portfolio_id, debits_pending, debits_posted, credits_pending, credits_posted"
)
_TRANSFER_COLUMNS = (
    "id, debit_account_id, credit_account_id, amount, currency, code, ref, phase, pending_id, timeout_us, "
    "created_at, expires_at"
)
_HOLDING_COLUMNS = (
    "bid_id, investor_id, portfolio_id, lender_id, loan_id, currency, amount, investor_rate, lender_rate, status, "
    "written_off"
)
_KINDS = {kind.value: kind for kind in AccountKind}
_PHASES = {phase.value: phase for phase in Phase}
_STATUSES = {status.value: status for status in HoldingStatus}


def _account(row: Sequence[Any]) -> Account:
    return Account(
        row[0],
        row[1],
        _KINDS[row[2]],
        bool(row[3]),
        bool(row[4]),
        row[5],
        row[6],
        row[7],
        int(row[8]),
        int(row[9]),
        int(row[10]),
        int(row[11]),
    )


def _transfer(row: Sequence[Any]) -> Transfer:
    return Transfer(
        id=row[0],
        debit_account_id=row[1],
        credit_account_id=row[2],
        amount=int(row[3]),
        currency=row[4],
        code=row[5],
        ref=row[6],
        phase=_PHASES[row[7]],
        pending_id=row[8],
        timeout_us=int(row[9]),
        timestamp=int(row[10]),
        expires_at=int(row[11]),
    )


def _holding(row: Sequence[Any]) -> HoldingRow:
    return HoldingRow(
        bid_id=row[0],
        investor_id=row[1],
        portfolio_id=row[2],
        lender_id=row[3],
        loan_id=row[4],
        currency=row[5],
        amount=int(row[6]),
        investor_rate=Decimal(row[7]),
        lender_rate=Decimal(row[8]),
        status=_STATUSES[row[9]],
        written_off=int(row[10]),
    )


class _Sql:
    """The connection's dialect, and the few spellings that differ between SQLite and PostgreSQL."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sqlite = conn.dialect.name == "sqlite"
        self.p = "?" if self.sqlite else "%s"

    def any_of(self, column: str) -> str:
        """A condition ``column`` is one of a list passed as one parameter (see :meth:`list_param`)."""
        if self.sqlite:
            return f"{column} IN (SELECT value FROM json_each(?))"
        return f"{column} = ANY(%s)"

    def list_param(self, values: Iterable[str]) -> Any:
        return json.dumps(list(values)) if self.sqlite else list(values)

    def fetch(self, statement: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        """The rows of a query run on the driver's own cursor, in the connection's transaction: a batch reads
        tens of thousands of rows, and SQLAlchemy's result rows would cost more than the query."""
        driver: Any = self.conn.connection.driver_connection
        cursor = driver.cursor()
        try:
            cursor.execute(statement, params)
            rows: list[Sequence[Any]] = cursor.fetchall()
            return rows
        finally:
            cursor.close()

    def run(self, statement: str, params: Any = ()) -> None:
        self.conn.exec_driver_sql(statement, params)

    def accounts(self, ids: Iterable[str], *, lock: bool = False) -> dict[str, Account]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        suffix = " ORDER BY id FOR UPDATE" if lock and not self.sqlite else ""
        rows = self.fetch(
            f"SELECT {_ACCOUNT_COLUMNS} FROM ledger_accounts WHERE {self.any_of('id')}{suffix}",
            (self.list_param(wanted),),
        )
        return {row[0]: _account(row) for row in rows}

    def transfers(self, ids: Iterable[str]) -> dict[str, Transfer]:
        wanted = list(set(ids))
        if not wanted:
            return {}
        rows = self.fetch(
            f"SELECT {_TRANSFER_COLUMNS} FROM ledger_transfers WHERE {self.any_of('id')}",
            (self.list_param(wanted),),
        )
        return {row[0]: _transfer(row) for row in rows}

    def resolvers(self, pending_ids: Iterable[str]) -> dict[str, str]:
        wanted = list(set(pending_ids))
        if not wanted:
            return {}
        rows = self.fetch(
            f"SELECT pending_id, id FROM ledger_transfers WHERE {self.any_of('pending_id')}",
            (self.list_param(wanted),),
        )
        return {row[0]: row[1] for row in rows}


_ACCOUNT_INSERT = (
    "id, currency, kind, debits_must_not_exceed_credits, credits_must_not_exceed_debits, owner_id, loan_id, "
    "portfolio_id, debits_pending, debits_posted, credits_pending, credits_posted, created_at"
)
# Binary COPY sends each column in its type's own binary form: these are the types of _TRANSFER_COLUMNS.
_TRANSFER_TYPES = [
    "text",
    "text",
    "text",
    "int8",
    "text",
    "text",
    "text",
    "text",
    "text",
    "int8",
    "int8",
    "int8",
]


def _write_plan(sql: _Sql, plan: BatchPlan) -> None:
    """Store what :func:`plan_batch` decided, in the caller's transaction: the accounts it opened (with the totals
    it gave them: an INSERT that loses a race with another writer's is an integrity error, and the store runs the
    transaction again), its transfers, the reservations it opened and closed, the new totals of the other
    accounts, and the batch's row (which the database's balance check runs on).

    On PostgreSQL each of these is one statement (transfers by binary COPY, the rest over arrays), so that the
    statement triggers that keep the currency totals and check the accounts run once per batch."""
    p, now_us = sql.p, plan.now_us
    opened = {a.id: a for a in plan.opened}
    accounts = [
        (
            a.id,
            a.currency,
            a.kind.value,
            a.debits_must_not_exceed_credits,
            a.credits_must_not_exceed_debits,
            a.owner_id,
            a.loan_id,
            a.portfolio_id,
            *plan.changed[a.id],
            now_us,
        )
        for a in opened.values()
    ]
    transfers = [
        (
            t.id,
            t.debit_account_id,
            t.credit_account_id,
            t.amount,
            t.currency,
            t.code,
            t.ref,
            t.phase.value,
            t.pending_id,
            t.timeout_us,
            now_us,
            expires_at(t, now_us),
        )
        for t in plan.created
    ]
    pending = [(t.id, expires_at(t, now_us)) for t in plan.created if t.phase is Phase.PENDING]
    resolved = [t.pending_id for t in plan.created if t.pending_id is not None]
    changed = [(a, *totals) for a, totals in plan.changed.items() if a not in opened]
    if sql.sqlite:
        if accounts:
            sql.run(
                f"INSERT INTO ledger_accounts ({_ACCOUNT_INSERT}) VALUES ({', '.join([p] * 13)})", accounts
            )
        if transfers:
            sql.run(
                f"INSERT INTO ledger_transfers ({_TRANSFER_COLUMNS}) VALUES ({', '.join([p] * 12)})",
                transfers,
            )
        if pending:
            sql.run("INSERT INTO ledger_open_pendings (transfer_id, expires_at) VALUES (?, ?)", pending)
        if resolved:
            sql.run("DELETE FROM ledger_open_pendings WHERE transfer_id = ?", [(r,) for r in resolved])
        if changed:
            sql.run(
                "UPDATE ledger_accounts SET debits_pending = ?, debits_posted = ?, credits_pending = ?, "
                "credits_posted = ? WHERE id = ?",
                [(*row[1:], row[0]) for row in changed],
            )
    else:
        if accounts:
            sql.run(
                f"INSERT INTO ledger_accounts ({_ACCOUNT_INSERT}) SELECT * FROM unnest(%s::text[], %s::text[], "
                "%s::text[], %s::boolean[], %s::boolean[], %s::text[], %s::text[], %s::text[], %s::bigint[], "
                "%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])",
                tuple(list(column) for column in zip(*accounts, strict=True)),
            )
        if transfers:
            driver: Any = sql.conn.connection.driver_connection
            with (
                driver.cursor() as cursor,
                cursor.copy(
                    f"COPY ledger_transfers ({_TRANSFER_COLUMNS}) FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(_TRANSFER_TYPES)
                for row in transfers:
                    copy.write_row(row)
        if pending:
            ids, expiries = zip(*pending, strict=True)
            sql.run(
                "INSERT INTO ledger_open_pendings (transfer_id, expires_at) "
                "SELECT * FROM unnest(%s::text[], %s::bigint[])",
                (list(ids), list(expiries)),
            )
        if resolved:
            sql.run("DELETE FROM ledger_open_pendings WHERE transfer_id = ANY(%s)", (resolved,))
        if changed:
            sql.run(
                "UPDATE ledger_accounts AS a SET debits_pending = v.dp, debits_posted = v.dd, "
                "credits_pending = v.cp, credits_posted = v.cd FROM (SELECT * FROM unnest(%s::text[], "
                "%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[]) AS u(id, dp, dd, cp, cd)) AS v "
                "WHERE a.id = v.id",
                tuple(list(column) for column in zip(*changed, strict=True)),
            )
    if plan.created or plan.changed:
        sql.run(
            f"INSERT INTO ledger_batches (created_at, transfers) VALUES ({p}, {p})",
            (now_us, len(plan.created)),
        )


class _SqlTransaction(LedgerTransaction):
    def __init__(self, sql: _Sql, now_us: int) -> None:
        self.sql = sql
        self.now_us = now_us

    def apply(self, transfers: Sequence[Transfer], proposed: Iterable[Account] = ()) -> BatchPlan:
        sql = self.sql
        proposed = list(proposed)
        if not transfers:
            return BatchPlan([], [], {}, [], self.now_us)
        ids, pending_ids, account_ids = needed_ids(transfers)
        pendings = {t.id: t for t in sql.transfers(pending_ids).values() if t.phase is Phase.PENDING}
        for pending in pendings.values():
            account_ids.update(a for a in (pending.debit_account_id, pending.credit_account_id) if a)
        account_ids.update(a.id for a in proposed)
        accounts = sql.accounts(account_ids, lock=True)
        missing = check_proposals(accounts, proposed)
        accounts.update(missing)
        snapshot = Snapshot(
            accounts, sql.transfers(ids), pendings, sql.resolvers(pending_ids), frozenset(missing)
        )
        plan = plan_batch(transfers, snapshot, self.now_us)
        _write_plan(sql, plan)
        return plan

    def accounts(self, ids: Iterable[str]) -> dict[str, Account]:
        return self.sql.accounts(ids)

    def holdings(self, bid_ids: Iterable[str]) -> dict[str, HoldingRow]:
        sql = self.sql
        wanted = list(set(bid_ids))
        if not wanted:
            return {}
        rows = sql.fetch(
            f"SELECT {_HOLDING_COLUMNS} FROM ledger_holdings WHERE {sql.any_of('bid_id')}",
            (sql.list_param(wanted),),
        )
        return {row[0]: _holding(row) for row in rows}

    def holdings_of_loan(
        self, lender_id: str, loan_id: str, statuses: Collection[HoldingStatus]
    ) -> list[HoldingRow]:
        sql, p = self.sql, self.sql.p
        rows = sql.fetch(
            f"SELECT {_HOLDING_COLUMNS} FROM ledger_holdings WHERE lender_id = {p} AND loan_id = {p} "
            f"AND {sql.any_of('status')} ORDER BY bid_id",
            (lender_id, loan_id, sql.list_param(str(s) for s in statuses)),
        )
        return [_holding(row) for row in rows]

    def add_holdings(self, rows: Iterable[HoldingRow]) -> None:
        p = self.sql.p
        params = [
            (
                h.bid_id,
                h.account_id,
                h.investor_id,
                h.portfolio_id,
                h.lender_id,
                h.loan_id,
                h.currency,
                h.amount,
                str(h.investor_rate),
                str(h.lender_rate),
                h.status.value,
                h.written_off,
                self.now_us,
            )
            for h in rows
        ]
        if params:
            self.sql.run(
                "INSERT INTO ledger_holdings (bid_id, account_id, investor_id, portfolio_id, lender_id, loan_id, "
                "currency, amount, investor_rate, lender_rate, status, written_off, updated_at) "
                f"VALUES ({', '.join([p] * 13)}) ON CONFLICT (bid_id) DO NOTHING",
                params,
            )

    def update_holdings(
        self, bid_ids: Iterable[str], status: HoldingStatus, written_off: Mapping[str, int] | None = None
    ) -> None:
        p = self.sql.p
        lost = written_off or {}
        params = [(status.value, lost.get(b, 0), self.now_us, b) for b in bid_ids]
        if params:
            self.sql.run(
                f"UPDATE ledger_holdings SET status = {p}, written_off = written_off + {p}, updated_at = {p} "
                f"WHERE bid_id = {p}",
                params,
            )

    def loan(self, lender_id: str, loan_id: str) -> LoanRow | None:
        sql, p = self.sql, self.sql.p
        lock = "" if sql.sqlite else " FOR UPDATE"
        rows = sql.fetch(
            "SELECT lender_id, loan_id, currency, status, outstanding_principal, settled_version FROM ledger_loans "
            f"WHERE lender_id = {p} AND loan_id = {p}{lock}",
            (lender_id, loan_id),
        )
        if not rows:
            return None
        row = rows[0]
        return LoanRow(row[0], row[1], row[2], row[3], None if row[4] is None else int(row[4]), int(row[5]))

    def put_loan(self, row: LoanRow) -> None:
        p = self.sql.p
        self.sql.run(
            "INSERT INTO ledger_loans (lender_id, loan_id, currency, status, outstanding_principal, "
            f"settled_version, updated_at) VALUES ({', '.join([p] * 7)}) ON CONFLICT (lender_id, loan_id) DO UPDATE "
            "SET currency = excluded.currency, status = excluded.status, "
            "outstanding_principal = excluded.outstanding_principal, settled_version = excluded.settled_version, "
            "updated_at = excluded.updated_at",
            (
                row.lender_id,
                row.loan_id,
                row.currency,
                row.status,
                row.outstanding_principal,
                row.settled_version,
                self.now_us,
            ),
        )

    def record_drift(self, changes: Iterable[tuple[str, str, str]]) -> None:
        sql, p = self.sql, self.sql.p
        drifts = folded(changes, self.now_us)
        if not drifts:
            return
        # Merged in the statement itself (never read, then written): two writers noting the same portfolio at
        # once both count.
        sql.run(
            "INSERT INTO ledger_drift (portfolio_id, investor_id, changes, first_at, last_at) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT (portfolio_id) DO UPDATE SET "
            "changes = ledger_drift.changes + excluded.changes, last_at = excluded.last_at",
            [
                (portfolio, d.investor_id, d.changes, d.first_us, d.last_us)
                for portfolio, d in sorted(drifts.items())
            ],
        )
        sql.run(
            f"INSERT INTO ledger_drift_loans (portfolio_id, loan_id) VALUES ({p}, {p}) ON CONFLICT DO NOTHING",
            [(portfolio, loan) for portfolio, d in sorted(drifts.items()) for loan in sorted(d.loan_ids)],
        )

    def take_drift(self, opened_until_us: int, limit: int) -> list[PortfolioDrifted]:
        sql, p = self.sql, self.sql.p
        lock = "" if sql.sqlite else " FOR UPDATE SKIP LOCKED"
        rows = sql.fetch(
            "SELECT portfolio_id, investor_id, changes, first_at, last_at FROM ledger_drift "
            f"WHERE first_at <= {p} ORDER BY portfolio_id LIMIT {p}{lock}",
            (opened_until_us, limit),
        )
        if not rows:
            return []
        portfolios = [row[0] for row in rows]
        loans: dict[str, set[str]] = {}
        for portfolio, loan in sql.fetch(
            f"SELECT portfolio_id, loan_id FROM ledger_drift_loans WHERE {sql.any_of('portfolio_id')}",
            (sql.list_param(portfolios),),
        ):
            loans.setdefault(portfolio, set()).add(loan)
        for table in ("ledger_drift_loans", "ledger_drift"):
            sql.run(f"DELETE FROM {table} WHERE {sql.any_of('portfolio_id')}", (sql.list_param(portfolios),))
        return [
            Drift(investor, int(first), int(last), loans.get(portfolio, set()), int(changes)).event(portfolio)
            for portfolio, investor, changes, first, last in rows
        ]

    def publish(self, event: Event) -> None:
        add_to_outbox(self.sql.conn, event.topic, event, now=from_micros(self.now_us))


def _translate(error: IntegrityError) -> LedgerError | None:
    """The ledger error a driver's integrity error stands for, when it is one of the ledger's own checks."""
    if "ledger unbalanced" in str(error.orig):
        return UnbalancedLedgerError(
            "the database refused the batch: some currency's balances would not sum to zero", field="balance"
        )
    return None


@dataclass(eq=False, slots=True)
class _Ticket:
    """One flow waiting for its turn in a group commit, and what became of it."""

    work: Callable[[LedgerTransaction], Any]
    cache_kib: int
    done: bool = False
    result: Any = None
    error: Exception | None = None
    alone: bool = False  # to run again in a transaction of its own


class SqlLedgerStore(LedgerStore):
    """The ledger's store in SQLite or PostgreSQL; see the module's docstring.

    ``guard`` runs at the start of every transaction (a singleton job's fence: an owner that lost its job
    cannot write); an error it raises rolls the transaction back. A batch gets a page cache of about half a
    KiB per transfer on SQLite (:meth:`atomic_batch`), what its index pages need.
    """

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        *,
        attempts: int = 3,
        guard: Callable[[Connection], object] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.attempts = attempts
        self.guard = guard
        self._grouped = engine.dialect.name == "sqlite"
        self._turn = threading.Condition()
        self._waiting: list[_Ticket] = []
        self._leading = False

    durable = True
    """Sync every commit to disk (see the module's docstring); a subclass that does not exists only to measure
    what it costs (``bench/ledger.py``)."""

    @contextmanager
    def _transaction(self, cache_kib: int = 0) -> Iterator[_SqlTransaction]:
        with durably(self.engine) if self.durable else self.engine.connect() as conn, conn.begin():
            sql = _Sql(conn)
            if not sql.sqlite:
                sql.run(f"SET LOCAL synchronous_commit = {'on' if self.durable else 'off'}")
            if self.guard is not None:
                self.guard(conn)
            with larger_cache(conn, cache_kib):
                yield _SqlTransaction(sql, to_micros(self.clock.now()))

    def atomic(self, work: Callable[[LedgerTransaction], T]) -> T:
        return self._atomic(work)

    def atomic_batch(self, work: Callable[[LedgerTransaction], T], size: int) -> T:
        """:meth:`atomic` for a transaction of about ``size`` transfers (a larger page cache on SQLite)."""
        return self._atomic(work, min(size // 2, 64_000))

    def _atomic(self, work: Callable[[LedgerTransaction], T], cache_kib: int = 0) -> T:
        """Group commit on SQLite: the flows that arrive while a transaction is being committed wait for it,
        then the first of them runs them all in the next transaction, each in a savepoint of its own, and one sync
        makes them all durable. A flow that raises rolls back to its savepoint and leaves the others be; one that
        lost a race over an id is run again alone. SQLite commits one writer at a time, so the flows would queue
        for a sync each. PostgreSQL runs each flow in its own transaction: concurrent commits share its WAL
        flushes already, and a group that locks the accounts of several flows could deadlock with another
        process's group."""
        if not self._grouped:
            return self._alone(work, cache_kib)
        ticket = _Ticket(work, cache_kib)
        with self._turn:
            self._waiting.append(ticket)
            while self._leading and not ticket.done:
                self._turn.wait()
            group: list[_Ticket] = []
            if not ticket.done:
                group, self._waiting = self._waiting, []
                self._leading = True
        if group:
            try:
                self._commit(group)
            finally:
                with self._turn:
                    self._leading = False
                    self._turn.notify_all()
        if ticket.alone:
            return self._alone(work, cache_kib)
        if ticket.error is not None:
            raise ticket.error
        result: T = ticket.result
        return result

    def _commit(self, group: list[_Ticket]) -> None:
        try:
            with self._transaction(max(t.cache_kib for t in group)) as tx:
                for ticket in group:
                    savepoint = tx.sql.conn.begin_nested()
                    try:
                        ticket.result = ticket.work(tx)
                        savepoint.commit()
                    except IntegrityError as exc:
                        savepoint.rollback()
                        ticket.error = _translate(exc)
                        ticket.alone = ticket.error is None
                    except Exception as exc:
                        savepoint.rollback()
                        ticket.error = exc
        except IntegrityError:
            # The commit itself was refused (PostgreSQL checks the balances then): run each flow alone, so that
            # the one at fault fails and the others go through.
            for ticket in group:
                if ticket.error is None:
                    ticket.alone = True
        except Exception as exc:
            for ticket in group:
                if ticket.error is None:
                    ticket.error = exc
        finally:
            for ticket in group:
                ticket.done = True

    def _alone(self, work: Callable[[LedgerTransaction], T], cache_kib: int) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                with self._transaction(cache_kib) as tx:
                    return work(tx)
            except IntegrityError as exc:
                mapped = _translate(exc)
                if mapped is not None:
                    raise mapped from exc
                if attempt == self.attempts:
                    raise
        raise AssertionError("unreachable")

    def accounts(self, ids: Iterable[str]) -> dict[str, Account]:
        with reading(self.engine) as conn:
            return _Sql(conn).accounts(ids)

    def transfers(self, ids: Iterable[str]) -> dict[str, Transfer]:
        with reading(self.engine) as conn:
            return _Sql(conn).transfers(ids)

    def accounts_of(self, owner_id: str, kind: str) -> list[Account]:
        with reading(self.engine) as conn:
            sql = _Sql(conn)
            rows = sql.fetch(
                f"SELECT {_ACCOUNT_COLUMNS} FROM ledger_accounts WHERE owner_id = {sql.p} AND kind = {sql.p} "
                "ORDER BY id",
                (owner_id, kind),
            )
        return [_account(row) for row in rows]

    def holdings_with_balance(
        self,
        *,
        investor_id: str | None = None,
        portfolio_ids: Collection[str] | None = None,
        statuses: Collection[HoldingStatus] | None = None,
        currency: str | None = None,
    ) -> list[tuple[HoldingRow, int]]:
        with reading(self.engine) as conn:
            sql = _Sql(conn)
            where: list[str] = []
            params: list[Any] = []
            if investor_id is not None:
                where.append(f"h.investor_id = {sql.p}")
                params.append(investor_id)
            if currency is not None:
                where.append(f"h.currency = {sql.p}")
                params.append(currency)
            if portfolio_ids is not None:
                where.append(sql.any_of("h.portfolio_id"))
                params.append(sql.list_param(portfolio_ids))
            if statuses is not None:
                where.append(sql.any_of("h.status"))
                params.append(sql.list_param(str(s) for s in statuses))
            columns = ", ".join(f"h.{c.strip()}" for c in _HOLDING_COLUMNS.split(","))
            rows = sql.fetch(
                f"SELECT {columns}, COALESCE(a.credits_posted - a.debits_posted, 0) FROM ledger_holdings h "
                "LEFT JOIN ledger_accounts a ON a.id = h.account_id "
                f"WHERE {' AND '.join(where) or 'TRUE'} ORDER BY h.bid_id",
                params,
            )
        return [(_holding(row), int(row[11])) for row in rows]

    def loans(self, lender_id: str, loan_ids: Iterable[str]) -> dict[str, LoanRow]:
        wanted = list(set(loan_ids))
        if not wanted:
            return {}
        with reading(self.engine) as conn:
            sql = _Sql(conn)
            rows = sql.fetch(
                "SELECT lender_id, loan_id, currency, status, outstanding_principal, settled_version "
                f"FROM ledger_loans WHERE lender_id = {sql.p} AND {sql.any_of('loan_id')}",
                (lender_id, sql.list_param(wanted)),
            )
        return {
            r[1]: LoanRow(r[0], r[1], r[2], r[3], None if r[4] is None else int(r[4]), int(r[5]))
            for r in rows
        }

    def drift_due(self, opened_until_us: int) -> bool:
        with reading(self.engine) as conn:
            sql = _Sql(conn)
            return bool(
                sql.fetch(f"SELECT 1 FROM ledger_drift WHERE first_at <= {sql.p} LIMIT 1", (opened_until_us,))
            )

    def expired_pendings(self, now_us: int, limit: int) -> list[Transfer]:
        with reading(self.engine) as conn:
            sql = _Sql(conn)
            columns = ", ".join(f"t.{c.strip()}" for c in _TRANSFER_COLUMNS.split(","))
            rows = sql.fetch(
                f"SELECT {columns} FROM ledger_open_pendings AS o JOIN ledger_transfers AS t ON t.id = o.transfer_id "
                f"WHERE o.expires_at > 0 AND o.expires_at <= {sql.p} ORDER BY o.expires_at, o.transfer_id "
                f"LIMIT {sql.p}",
                (now_us, limit),
            )
        return [_transfer(row) for row in rows]

    def postings(
        self, account_id: str, start_us: int, end_us: int, after_seq: int, limit: int
    ) -> list[Posting]:
        with reading(self.engine) as conn:
            sql = _Sql(conn)
            p = sql.p
            columns = "seq, id, created_at, code, ref, debit_account_id, amount"
            where = (
                f"AND phase IN ('single', 'post') AND seq > {p} AND created_at >= {p} AND created_at < {p}"
            )
            rows = sql.fetch(
                f"SELECT * FROM (SELECT {columns} FROM ledger_transfers WHERE debit_account_id = {p} {where} "
                f"UNION ALL SELECT {columns} FROM ledger_transfers WHERE credit_account_id = {p} {where}) AS m "
                f"ORDER BY seq LIMIT {p}",
                (account_id, after_seq, start_us, end_us, account_id, after_seq, start_us, end_us, limit),
            )
        return [
            Posting(int(r[0]), r[1], int(r[2]), r[3], r[4], -int(r[6]) if r[5] == account_id else int(r[6]))
            for r in rows
        ]

    def net_posted(self, account_id: str, start_us: int, end_us: int) -> int:
        with reading(self.engine) as conn:
            sql = _Sql(conn)
            p = sql.p
            rows = sql.fetch(
                "SELECT (SELECT COALESCE(SUM(amount), 0) FROM ledger_transfers WHERE credit_account_id = "
                f"{p} AND phase IN ('single', 'post') AND created_at >= {p} AND created_at < {p}) - "
                "(SELECT COALESCE(SUM(amount), 0) FROM ledger_transfers WHERE debit_account_id = "
                f"{p} AND phase IN ('single', 'post') AND created_at >= {p} AND created_at < {p})",
                (account_id, start_us, end_us, account_id, start_us, end_us),
            )
        return int(rows[0][0])

    def activity(self) -> Activity:
        with reading(self.engine) as conn:
            [row] = _Sql(conn).fetch(
                "SELECT (SELECT MAX(seq) FROM ledger_batches), (SELECT MAX(seq) FROM ledger_transfers), "
                "(SELECT COUNT(*) FROM ledger_open_pendings)",
                (),
            )
        return Activity(int(row[0] or 0), int(row[1] or 0), int(row[2]))

    def net_by_currency(self) -> dict[str, tuple[int, int]]:
        with reading(self.engine) as conn:
            rows = _Sql(conn).fetch(
                "SELECT currency, SUM(credits_posted - debits_posted), SUM(credits_pending - debits_pending) "
                "FROM ledger_accounts GROUP BY currency",
                (),
            )
        return {row[0]: (int(row[1]), int(row[2])) for row in rows}
