"""The ledger on SQL (SQLite or PostgreSQL, through SQLAlchemy Core).

A batch of transfers is one database transaction and a handful of statements whatever its size:

1. load the pending transfers its posts and voids name (they are immutable, so no lock is needed);
2. lock every account it touches, in id order (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's
   ``BEGIN IMMEDIATE`` already makes the writer exclusive);
3. load the stored transfers that share its ids and the resolvers of its pending transfers;
4. apply it in memory with :func:`tranche.ledger.domain.plan_batch`;
5. write the new transfers with one ``executemany``, the changed accounts with one statement (PostgreSQL:
   ``UPDATE … FROM unnest(…)``) or one ``executemany`` (SQLite), and the batch row that the database
   refuses unless every currency still sums to zero.

The driver's own SQL is used on the hot path (``exec_driver_sql`` with tuples) because building SQLAlchemy
statements per row costs more than the database's work.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from tranche.ledger.domain import (
    Account,
    AccountKind,
    BatchPlan,
    Phase,
    Snapshot,
    Transfer,
    TransferResult,
    expires_at,
    needed_ids,
    plan_batch,
)
from tranche.ledger.errors import AccountExistsError, LedgerError, UnbalancedLedgerError, UnknownAccountError
from tranche.shared.clock import Clock
from tranche.store.engine import larger_cache, reading

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_ACCOUNT_COLUMNS = (
    "id, currency, kind, debits_must_not_exceed_credits, credits_must_not_exceed_debits, owner_id, loan_id, "
    "portfolio_id, debits_pending, debits_posted, credits_pending, credits_posted"
)
_TRANSFER_COLUMNS = (
    "id, debit_account_id, credit_account_id, amount, currency, code, ref, phase, pending_id, timeout_us, "
    "created_at, expires_at"
)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware instant."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The UTC instant ``micros`` microseconds after the epoch."""
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)


_KINDS = {kind.value: kind for kind in AccountKind}
_PHASES = {phase.value: phase for phase in Phase}


def account_from_row(row: Sequence[Any]) -> Account:
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


def transfer_from_row(row: Sequence[Any]) -> Transfer:
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


class _Sql:
    """Dialect-specific spellings of the few statements that differ."""

    def __init__(self, conn: Connection) -> None:
        self.sqlite = conn.dialect.name == "sqlite"
        self.p = "?" if self.sqlite else "%s"

    def any_of(self, column: str) -> str:
        """A condition ``column`` is one of a list passed as one parameter (see :meth:`list_param`)."""
        if self.sqlite:
            return f"{column} IN (SELECT value FROM json_each(?))"
        return f"{column} = ANY(%s)"

    def list_param(self, values: Iterable[str]) -> Any:
        return json.dumps(list(values)) if self.sqlite else list(values)


def _fetch(conn: Connection, statement: str, params: Sequence[Any]) -> list[Sequence[Any]]:
    """The rows of a query run on the driver's own cursor, in the connection's transaction: a batch reads
    tens of thousands of rows, and SQLAlchemy's result rows would cost more than the query."""
    driver: Any = conn.connection.driver_connection
    cursor = driver.cursor()
    try:
        cursor.execute(statement, params)
        rows: list[Sequence[Any]] = cursor.fetchall()
        return rows
    finally:
        cursor.close()


def load_accounts(conn: Connection, ids: Iterable[str], *, lock: bool = False) -> dict[str, Account]:
    """The accounts among ``ids`` that exist; with ``lock`` they stay locked until the transaction ends."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    sql = _Sql(conn)
    suffix = " ORDER BY id FOR UPDATE" if lock and not sql.sqlite else ""
    rows = _fetch(
        conn,
        f"SELECT {_ACCOUNT_COLUMNS} FROM ledger_accounts WHERE {sql.any_of('id')}{suffix}",
        (sql.list_param(wanted),),
    )
    return {row[0]: account_from_row(row) for row in rows}


def load_transfers(conn: Connection, ids: Iterable[str]) -> dict[str, Transfer]:
    """The stored transfers among ``ids``."""
    wanted = list(set(ids))
    if not wanted:
        return {}
    sql = _Sql(conn)
    rows = _fetch(
        conn,
        f"SELECT {_TRANSFER_COLUMNS} FROM ledger_transfers WHERE {sql.any_of('id')}",
        (sql.list_param(wanted),),
    )
    return {row[0]: transfer_from_row(row) for row in rows}


def load_resolvers(conn: Connection, pending_ids: Iterable[str]) -> dict[str, str]:
    """For each of ``pending_ids`` already posted or voided, the id of the transfer that did it."""
    wanted = list(set(pending_ids))
    if not wanted:
        return {}
    sql = _Sql(conn)
    rows = conn.exec_driver_sql(
        f"SELECT pending_id, id FROM ledger_transfers WHERE {sql.any_of('pending_id')}",
        (sql.list_param(wanted),),
    ).all()
    return {row[0]: row[1] for row in rows}


def open_accounts(conn: Connection, accounts: Iterable[Account], now_us: int) -> None:
    """Create the accounts that do not exist yet (with zero totals); an existing one must be defined alike.

    Raises :class:`AccountExistsError` naming the account and the differing field otherwise.
    """
    wanted = {a.id: a for a in accounts}
    if not wanted:
        return
    sql = _Sql(conn)
    stored = load_accounts(conn, wanted)
    missing = [a for a in wanted.values() if a.id not in stored]
    if missing:
        p = sql.p
        conn.exec_driver_sql(
            "INSERT INTO ledger_accounts (id, currency, kind, debits_must_not_exceed_credits, "
            "credits_must_not_exceed_debits, owner_id, loan_id, portfolio_id, debits_pending, debits_posted, "
            f"credits_pending, credits_posted, created_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, "
            f"0, 0, 0, 0, {p}) ON CONFLICT (id) DO NOTHING",
            [
                (
                    a.id,
                    a.currency,
                    a.kind.value,
                    a.debits_must_not_exceed_credits,
                    a.credits_must_not_exceed_debits,
                    a.owner_id,
                    a.loan_id,
                    a.portfolio_id,
                    now_us,
                )
                for a in missing
            ],
        )
        # Another writer may have created some of them first, perhaps differently: compare what is stored.
        stored.update(load_accounts(conn, [a.id for a in missing]))
    for account_id, account in wanted.items():
        differs = account.same_definition(stored[account_id])
        if differs is not None:
            raise AccountExistsError(
                f"account {account_id} exists with another {differs}", record=account_id, field=differs
            )


def apply_batch(conn: Connection, transfers: Sequence[Transfer], now_us: int) -> BatchPlan:
    """Apply one batch inside the caller's transaction (see the module's docstring for the steps)."""
    if not transfers:
        return BatchPlan([], [], {})
    sql = _Sql(conn)
    ids, pending_ids, account_ids = needed_ids(transfers)
    pendings = {t.id: t for t in load_transfers(conn, pending_ids).values() if t.phase is Phase.PENDING}
    for pending in pendings.values():
        assert pending.debit_account_id is not None and pending.credit_account_id is not None
        account_ids.add(pending.debit_account_id)
        account_ids.add(pending.credit_account_id)
    accounts = load_accounts(conn, account_ids, lock=True)
    existing = load_transfers(conn, ids)
    resolved = load_resolvers(conn, pending_ids)
    plan = plan_batch(transfers, Snapshot(accounts, existing, pendings, resolved), now_us)
    write_plan(conn, plan, now_us, sql)
    return plan


def write_plan(conn: Connection, plan: BatchPlan, now_us: int, sql: _Sql | None = None) -> None:
    sql = sql or _Sql(conn)
    p = sql.p
    if plan.created:
        conn.exec_driver_sql(
            f"INSERT INTO ledger_transfers ({_TRANSFER_COLUMNS}) VALUES "
            f"({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})",
            [
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
            ],
        )
        opened = [(t.id, expires_at(t, now_us)) for t in plan.created if t.phase is Phase.PENDING]
        closed = [(t.pending_id,) for t in plan.created if t.pending_id is not None]
        if opened:
            conn.exec_driver_sql(
                f"INSERT INTO ledger_open_pendings (transfer_id, expires_at) VALUES ({p}, {p})", opened
            )
        if closed:
            conn.exec_driver_sql(f"DELETE FROM ledger_open_pendings WHERE transfer_id = {p}", closed)
    if plan.changed:
        if sql.sqlite:
            conn.exec_driver_sql(
                "UPDATE ledger_accounts SET debits_pending = ?, debits_posted = ?, credits_pending = ?, "
                "credits_posted = ? WHERE id = ?",
                [(*totals, account_id) for account_id, totals in plan.changed.items()],
            )
        else:
            # One statement, so that the statement-level totals trigger runs once per batch.
            ids = list(plan.changed)
            columns = list(zip(*plan.changed.values(), strict=True))
            conn.exec_driver_sql(
                "UPDATE ledger_accounts AS a SET debits_pending = v.dp, debits_posted = v.dd, "
                "credits_pending = v.cp, credits_posted = v.cd FROM (SELECT unnest(%s::text[]) AS id, "
                "unnest(%s::bigint[]) AS dp, unnest(%s::bigint[]) AS dd, unnest(%s::bigint[]) AS cp, "
                "unnest(%s::bigint[]) AS cd) AS v WHERE a.id = v.id",
                (ids, list(columns[0]), list(columns[1]), list(columns[2]), list(columns[3])),
            )
    if plan.created or plan.changed:
        conn.exec_driver_sql(
            f"INSERT INTO ledger_batches (created_at, transfers) VALUES ({p}, {p})",
            (now_us, len(plan.created)),
        )


def translate(error: IntegrityError) -> LedgerError | None:
    """The ledger error a driver's integrity error stands for, when it is one of the ledger's own checks."""
    text = str(error.orig)
    if "ledger unbalanced" in text:
        return UnbalancedLedgerError(
            "the database refused the batch: some currency's balances would not sum to zero", field="balance"
        )
    return None


class SqlLedger:
    """The ledger's store: accounts and transfers in SQLite or PostgreSQL.

    ``submit`` splits its transfers into batches of ``batch_size`` (a linked chain is never split) and applies
    each in its own transaction; a batch that lost a race with a concurrent writer over a transfer id is
    retried, and then sees that id as existing.
    """

    def __init__(self, engine: Engine, clock: Clock, *, batch_size: int = 10_000) -> None:
        self.engine = engine
        self.clock = clock
        self.batch_size = batch_size

    def now_us(self) -> int:
        return to_micros(self.clock.now())

    def open_accounts(self, accounts: Iterable[Account]) -> None:
        """Create missing accounts; see :func:`open_accounts`."""
        with self.engine.begin() as conn:
            open_accounts(conn, accounts, self.now_us())

    def submit(self, transfers: Sequence[Transfer]) -> list[TransferResult]:
        """Apply ``transfers`` in order, batch by batch; one result per transfer, in the same order."""
        results: list[TransferResult] = []
        for batch in self._batches(transfers):
            results.extend(self._apply_with_retry(batch).results)
        return results

    def _apply_with_retry(self, batch: Sequence[Transfer]) -> BatchPlan:
        for attempt in range(3):
            try:
                # About half a KiB of page cache per transfer, as the batch's index pages need.
                with self.engine.begin() as conn, larger_cache(conn, min(len(batch) // 2, 64_000)):
                    return apply_batch(conn, batch, self.now_us())
            except IntegrityError as exc:
                mapped = translate(exc)
                if mapped is not None:
                    raise mapped from exc
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _batches(self, transfers: Sequence[Transfer]) -> Iterator[Sequence[Transfer]]:
        start = 0
        while start < len(transfers):
            stop = min(start + self.batch_size, len(transfers))
            while stop < len(transfers) and transfers[stop - 1].linked:
                stop += 1  # keep a linked chain in one batch
            yield transfers[start:stop]
            start = stop

    def accounts(self, ids: Iterable[str]) -> dict[str, Account]:
        with reading(self.engine) as conn:
            return load_accounts(conn, ids)

    def account(self, account_id: str) -> Account:
        found = self.accounts([account_id]).get(account_id)
        if found is None:
            raise UnknownAccountError(f"account {account_id} does not exist", record=account_id)
        return found

    def transfers(self, ids: Iterable[str]) -> dict[str, Transfer]:
        with reading(self.engine) as conn:
            return load_transfers(conn, ids)

    def expire_pendings(self, *, limit: int = 10_000) -> list[TransferResult]:
        """Void the pending transfers whose timeout has passed (ids ``<pending id>~expired``, code ``expired``)."""
        now = self.now_us()
        sql_p = "?" if self.engine.dialect.name == "sqlite" else "%s"
        with reading(self.engine) as conn:
            rows = conn.exec_driver_sql(
                "SELECT o.transfer_id, t.currency FROM ledger_open_pendings AS o "
                "JOIN ledger_transfers AS t ON t.id = o.transfer_id "
                f"WHERE o.expires_at > 0 AND o.expires_at <= {sql_p} ORDER BY o.expires_at LIMIT {sql_p}",
                (now, limit),
            ).all()
        voids = [
            Transfer.void(f"{pending_id}~expired", pending_id, currency, code="expired")
            for pending_id, currency in rows
        ]
        return self.submit(voids)

    def net_by_currency(self) -> dict[str, tuple[int, int]]:
        """Per currency, the sums of posted and pending ``credits - debits`` over all accounts (both zero)."""
        with reading(self.engine) as conn:
            rows = conn.exec_driver_sql(
                "SELECT currency, SUM(credits_posted - debits_posted), SUM(credits_pending - debits_pending) "
                "FROM ledger_accounts GROUP BY currency"
            ).all()
        return {row[0]: (int(row[1]), int(row[2])) for row in rows}
