"""The ledger's storage port, the rows it keeps beside accounts and transfers, and its in-memory adapter.

A flow of :class:`tranche.ledger.LedgerService` is one call of :meth:`LedgerStore.atomic`: the store runs the
flow's function in one transaction (:class:`LedgerTransaction`), in which the flow applies its transfers as one
batch (the store loads the batch's :class:`~tranche.ledger.planning.Snapshot`, plans it with the pure rule and
writes the plan), reads and writes its holdings and loans, and publishes its events; all of it commits together
or not at all. A store may run the function again when a concurrent writer won a race over an id, so the
function only talks to the transaction.

Two adapters pass one contract (``tests/ledger/test_ledger_store.py``): :class:`InMemoryLedgerStore` here, and
:class:`tranche.ledger.adapters.SqlLedgerStore` (SQLite or PostgreSQL).
"""

from __future__ import annotations

import enum
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import NamedTuple, TypeVar

from tranche.ledger.domain import Account, Phase, Transfer, from_micros, net_by_currency, to_micros
from tranche.ledger.errors import AccountExistsError
from tranche.ledger.messages import PortfolioDrifted
from tranche.ledger.planning import BatchPlan, Snapshot, needed_ids, plan_batch
from tranche.shared.clock import Clock
from tranche.shared.messages import Event

T = TypeVar("T")


class HoldingStatus(enum.StrEnum):
    """Where a bid's holding stands: reserved, then active (funded) or closed without ever being held
    (rolled back, expired), then repaid, defaulted or written off with its loan."""

    RESERVED = "reserved"
    ACTIVE = "active"
    ROLLED_BACK = "rolled_back"
    EXPIRED = "expired"
    REPAID = "repaid"
    DEFAULTED = "defaulted"
    WRITTEN_OFF = "written_off"


NEVER_HELD = frozenset({HoldingStatus.ROLLED_BACK, HoldingStatus.EXPIRED})
"""Statuses of bids whose reservation was released: nothing was ever held."""
RECEIVING = (HoldingStatus.ACTIVE, HoldingStatus.DEFAULTED)
"""Statuses of holdings that receive what a borrower pays."""


@dataclass(frozen=True, slots=True)
class HoldingRow:
    """One bid the ledger reserved cash for: who holds what of which loan, at which rates.

    ``amount`` is the principal invested; ``written_off`` the principal lost when the loan was written off.
    """

    bid_id: str
    investor_id: str
    portfolio_id: str
    lender_id: str
    loan_id: str
    currency: str
    amount: int
    investor_rate: Decimal
    lender_rate: Decimal
    status: HoldingStatus
    written_off: int = 0

    @property
    def account_id(self) -> str:
        """The holding's account (its balance is the principal still held)."""
        return f"hold:{self.bid_id}"


@dataclass(frozen=True, slots=True)
class LoanRow:
    """The ledger's view of a loan it settled: its status, outstanding principal (unknown until the first tape
    after funding) and the last tape version whose payments it distributed."""

    lender_id: str
    loan_id: str
    currency: str
    status: str
    outstanding_principal: int | None
    settled_version: int


@dataclass(slots=True)
class Drift:
    """A portfolio's pending drift notification: the loans whose holdings moved, how many settlement steps,
    and when the first and the last of them happened (microseconds)."""

    investor_id: str
    first_us: int
    last_us: int
    loan_ids: set[str]
    changes: int

    def fold(self, loan_ids: Iterable[str], changes: int, at_us: int) -> None:
        self.loan_ids.update(loan_ids)
        self.changes += changes
        self.last_us = max(self.last_us, at_us)

    def event(self, portfolio_id: str) -> PortfolioDrifted:
        return PortfolioDrifted(
            portfolio_id,
            self.investor_id,
            tuple(sorted(self.loan_ids)),
            self.changes,
            from_micros(self.first_us),
            from_micros(self.last_us),
        )


def folded(changes: Iterable[tuple[str, str, str]], at_us: int) -> dict[str, Drift]:
    """``changes`` folded per portfolio."""
    drifts: dict[str, Drift] = {}
    for portfolio_id, investor_id, loan_id in changes:
        drift = drifts.get(portfolio_id)
        if drift is None:
            drifts[portfolio_id] = Drift(investor_id, at_us, at_us, {loan_id}, 1)
        else:
            drift.fold((loan_id,), 1, at_us)
    return drifts


class Posting(NamedTuple):
    """One posted movement on an account: ``amount`` signed (a credit positive), at ``created_us``."""

    seq: int
    transfer_id: str
    created_us: int
    code: str
    ref: str
    amount: int


class Activity(NamedTuple):
    """Batches written and transfers stored since the ledger began (both only grow), and the reservations
    (pending transfers) open now."""

    batches: int
    transfers: int
    open_reservations: int


class LedgerTransaction(ABC):
    """What a flow may do inside one transaction of the store."""

    now_us: int
    """The transaction's instant (microseconds since the epoch): it stamps every transfer applied in it."""

    @abstractmethod
    def apply(self, transfers: Sequence[Transfer], proposed: Iterable[Account] = ()) -> BatchPlan:
        """Apply ``transfers`` as one batch. ``proposed`` are accounts the batch may open: each is created (with
        the totals the batch gives it) only when an applied transfer uses it, and one that exists must be
        defined alike (else :class:`AccountExistsError`)."""

    @abstractmethod
    def accounts(self, ids: Iterable[str]) -> dict[str, Account]:
        """The accounts among ``ids`` as this transaction sees them."""

    @abstractmethod
    def holdings(self, bid_ids: Iterable[str]) -> dict[str, HoldingRow]:
        """The holdings of these bids."""

    @abstractmethod
    def holdings_of_loan(
        self, lender_id: str, loan_id: str, statuses: Collection[HoldingStatus]
    ) -> list[HoldingRow]:
        """The loan's holdings in one of ``statuses``, ordered by bid id."""

    @abstractmethod
    def add_holdings(self, rows: Iterable[HoldingRow]) -> None:
        """Store new holdings (bids not stored yet)."""

    @abstractmethod
    def update_holdings(
        self, bid_ids: Iterable[str], status: HoldingStatus, written_off: Mapping[str, int] | None = None
    ) -> None:
        """Set the status of these holdings, and add ``written_off[bid]`` to what each lost."""

    @abstractmethod
    def loan(self, lender_id: str, loan_id: str) -> LoanRow | None:
        """The loan's row, held (locked) until the transaction ends."""

    @abstractmethod
    def put_loan(self, row: LoanRow) -> None:
        """Create or replace the loan's row."""

    @abstractmethod
    def record_drift(self, changes: Iterable[tuple[str, str, str]]) -> None:
        """Note that settlement changed these portfolios' holdings, as ``(portfolio_id, investor_id, loan_id)``:
        each portfolio's changes fold into one pending notification, opened at its first change."""

    @abstractmethod
    def take_drift(self, opened_until_us: int, limit: int) -> list[PortfolioDrifted]:
        """Remove and return the pending notifications opened at or before ``opened_until_us`` (by portfolio
        id, at most ``limit``)."""

    @abstractmethod
    def publish(self, event: Event) -> None:
        """Publish ``event`` when (and only if) the transaction commits (through the outbox)."""


class LedgerStore(ABC):
    """Accounts, transfers, holdings and loans; see the module's docstring."""

    @abstractmethod
    def atomic(self, work: Callable[[LedgerTransaction], T]) -> T:
        """Run ``work`` in one transaction and commit it durably before returning what it returned. A
        transaction that lost a race with a concurrent writer over an id is run again (``work`` must be safe
        to repeat); an error raised by ``work`` rolls everything back."""

    @abstractmethod
    def accounts(self, ids: Iterable[str]) -> dict[str, Account]:
        """The stored accounts among ``ids``."""

    @abstractmethod
    def transfers(self, ids: Iterable[str]) -> dict[str, Transfer]:
        """The stored transfers among ``ids`` (posts and voids with their pending transfer's accounts)."""

    @abstractmethod
    def accounts_of(self, owner_id: str, kind: str) -> list[Account]:
        """The accounts of one owner and kind (an investor's cash accounts, one per currency), by id."""

    @abstractmethod
    def holdings_with_balance(
        self,
        *,
        investor_id: str | None = None,
        portfolio_ids: Collection[str] | None = None,
        statuses: Collection[HoldingStatus] | None = None,
        currency: str | None = None,
    ) -> list[tuple[HoldingRow, int]]:
        """Holdings of one investor, of some portfolios or of one currency (in one of ``statuses``, when given),
        each with the principal still held (its account's posted balance), ordered by bid id."""

    @abstractmethod
    def loans(self, lender_id: str, loan_ids: Iterable[str]) -> dict[str, LoanRow]:
        """The rows of the lender's loans among ``loan_ids`` (the loans the ledger settled), by loan id."""

    @abstractmethod
    def drift_due(self, opened_until_us: int) -> bool:
        """Whether a drift notification opened at or before ``opened_until_us`` waits (a read: the timer asks
        before it opens a transaction)."""

    @abstractmethod
    def expired_pendings(self, now_us: int, limit: int) -> list[Transfer]:
        """Open pending transfers whose timeout has passed at ``now_us``, oldest expiry first."""

    @abstractmethod
    def postings(
        self, account_id: str, start_us: int, end_us: int, after_seq: int, limit: int
    ) -> list[Posting]:
        """Posted movements of the account created in ``[start_us, end_us)`` after ``after_seq``, in order."""

    @abstractmethod
    def net_posted(self, account_id: str, start_us: int, end_us: int) -> int:
        """The sum of the account's posted movements created in ``[start_us, end_us)``."""

    @abstractmethod
    def net_by_currency(self) -> dict[str, tuple[int, int]]:
        """Per currency, the sums of posted and pending ``credits - debits`` over all accounts (both zero)."""

    @abstractmethod
    def activity(self) -> Activity:
        """How much the ledger has done so far, cheap to read at every scrape of the metrics."""


def check_proposals(stored: Mapping[str, Account], proposed: Iterable[Account]) -> dict[str, Account]:
    """The proposed accounts that are not stored; raises :class:`AccountExistsError` for one that is stored
    with another definition."""
    missing: dict[str, Account] = {}
    for account in proposed:
        found = stored.get(account.id)
        if found is None:
            missing[account.id] = account
            continue
        differs = account.same_definition(found)
        if differs is not None:
            raise AccountExistsError(
                f"account {account.id} exists with another {differs}", record=account.id, field=differs
            )
    return missing


@dataclass(slots=True)
class _State:
    accounts: dict[str, Account] = field(default_factory=dict)
    transfers: dict[str, Transfer] = field(default_factory=dict)
    log: list[Transfer] = field(default_factory=list)  # in seq order: seq is the position plus one
    seq_of: dict[str, int] = field(default_factory=dict)
    resolvers: dict[str, str] = field(default_factory=dict)
    open_pendings: dict[str, int] = field(default_factory=dict)
    holdings: dict[str, HoldingRow] = field(default_factory=dict)
    loans: dict[tuple[str, str], LoanRow] = field(default_factory=dict)
    drift: dict[str, Drift] = field(default_factory=dict)
    published: list[Event] = field(default_factory=list)

    def copy(self) -> _State:
        return _State(
            dict(self.accounts),
            dict(self.transfers),
            list(self.log),
            dict(self.seq_of),
            dict(self.resolvers),
            dict(self.open_pendings),
            dict(self.holdings),
            dict(self.loans),
            {p: replace(d, loan_ids=set(d.loan_ids)) for p, d in self.drift.items()},
            list(self.published),
        )


class _MemoryTransaction(LedgerTransaction):
    def __init__(self, state: _State, now_us: int) -> None:
        self.state = state
        self.now_us = now_us

    def apply(self, transfers: Sequence[Transfer], proposed: Iterable[Account] = ()) -> BatchPlan:
        state = self.state
        ids, pending_ids, account_ids = needed_ids(transfers)
        pendings = {p: state.transfers[p] for p in pending_ids if p in state.transfers}
        for pending in pendings.values():
            account_ids.update(a for a in (pending.debit_account_id, pending.credit_account_id) if a)
        accounts = {a: state.accounts[a] for a in account_ids if a in state.accounts}
        missing = check_proposals(state.accounts, proposed)
        accounts.update(missing)
        snapshot = Snapshot(
            accounts,
            {i: state.transfers[i] for i in ids if i in state.transfers},
            pendings,
            {p: state.resolvers[p] for p in pending_ids if p in state.resolvers},
            frozenset(missing),
        )
        plan = plan_batch(transfers, snapshot, self.now_us)
        for transfer in plan.stamped():
            state.transfers[transfer.id] = transfer
            state.log.append(transfer)
            state.seq_of[transfer.id] = len(state.log)
            if transfer.phase is Phase.PENDING:
                state.open_pendings[transfer.id] = transfer.expires_at
            elif transfer.pending_id is not None:
                state.resolvers[transfer.pending_id] = transfer.id
                state.open_pendings.pop(transfer.pending_id, None)
        for account_id in plan.changed:
            after = plan.after(account_id)
            assert after is not None
            state.accounts[account_id] = after
        return plan

    def accounts(self, ids: Iterable[str]) -> dict[str, Account]:
        return {a: self.state.accounts[a] for a in ids if a in self.state.accounts}

    def holdings(self, bid_ids: Iterable[str]) -> dict[str, HoldingRow]:
        return {b: self.state.holdings[b] for b in bid_ids if b in self.state.holdings}

    def holdings_of_loan(
        self, lender_id: str, loan_id: str, statuses: Collection[HoldingStatus]
    ) -> list[HoldingRow]:
        found = [
            h
            for h in self.state.holdings.values()
            if h.lender_id == lender_id and h.loan_id == loan_id and h.status in statuses
        ]
        return sorted(found, key=lambda h: h.bid_id)

    def add_holdings(self, rows: Iterable[HoldingRow]) -> None:
        for row in rows:
            self.state.holdings.setdefault(row.bid_id, row)

    def update_holdings(
        self, bid_ids: Iterable[str], status: HoldingStatus, written_off: Mapping[str, int] | None = None
    ) -> None:
        lost = written_off or {}
        for bid_id in bid_ids:
            row = self.state.holdings[bid_id]
            self.state.holdings[bid_id] = replace(
                row, status=status, written_off=row.written_off + lost.get(bid_id, 0)
            )

    def loan(self, lender_id: str, loan_id: str) -> LoanRow | None:
        return self.state.loans.get((lender_id, loan_id))

    def put_loan(self, row: LoanRow) -> None:
        self.state.loans[(row.lender_id, row.loan_id)] = row

    def record_drift(self, changes: Iterable[tuple[str, str, str]]) -> None:
        for portfolio_id, new in folded(changes, self.now_us).items():
            drift = self.state.drift.get(portfolio_id)
            if drift is None:
                self.state.drift[portfolio_id] = new
            else:
                drift.fold(new.loan_ids, new.changes, new.last_us)

    def take_drift(self, opened_until_us: int, limit: int) -> list[PortfolioDrifted]:
        due = sorted(p for p, d in self.state.drift.items() if d.first_us <= opened_until_us)[:limit]
        return [self.state.drift.pop(p).event(p) for p in due]

    def publish(self, event: Event) -> None:
        self.state.published.append(event)


class InMemoryLedgerStore(LedgerStore):
    """The ledger's store in the memory of one process: for tests, and as the contract's reference.

    A transaction works on a copy of the state and replaces it when it commits, under one lock, so a flow that
    raises leaves nothing behind. ``published`` lists the events of committed transactions, in order.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._batches = 0
        self._state = _State()
        self._lock = threading.RLock()

    @property
    def published(self) -> list[Event]:
        return list(self._state.published)

    def atomic(self, work: Callable[[LedgerTransaction], T]) -> T:
        with self._lock:
            working = self._state.copy()
            result = work(_MemoryTransaction(working, to_micros(self.clock.now())))
            if len(working.log) > len(self._state.log):
                self._batches += 1
            self._state = working
            return result

    def accounts(self, ids: Iterable[str]) -> dict[str, Account]:
        accounts = self._state.accounts
        return {a: accounts[a] for a in ids if a in accounts}

    def transfers(self, ids: Iterable[str]) -> dict[str, Transfer]:
        transfers = self._state.transfers
        return {t: transfers[t] for t in ids if t in transfers}

    def accounts_of(self, owner_id: str, kind: str) -> list[Account]:
        found = [a for a in self._state.accounts.values() if a.owner_id == owner_id and a.kind == kind]
        return sorted(found, key=lambda a: a.id)

    def holdings_with_balance(
        self,
        *,
        investor_id: str | None = None,
        portfolio_ids: Collection[str] | None = None,
        statuses: Collection[HoldingStatus] | None = None,
        currency: str | None = None,
    ) -> list[tuple[HoldingRow, int]]:
        state = self._state
        wanted = None if portfolio_ids is None else set(portfolio_ids)
        found = []
        for row in state.holdings.values():
            if investor_id is not None and row.investor_id != investor_id:
                continue
            if currency is not None and row.currency != currency:
                continue
            if wanted is not None and row.portfolio_id not in wanted:
                continue
            if statuses is not None and row.status not in statuses:
                continue
            account = state.accounts.get(row.account_id)
            found.append((row, 0 if account is None else account.balance))
        return sorted(found, key=lambda pair: pair[0].bid_id)

    def loans(self, lender_id: str, loan_ids: Iterable[str]) -> dict[str, LoanRow]:
        loans = self._state.loans
        return {i: loans[(lender_id, i)] for i in loan_ids if (lender_id, i) in loans}

    def drift_due(self, opened_until_us: int) -> bool:
        return any(d.first_us <= opened_until_us for d in self._state.drift.values())

    def expired_pendings(self, now_us: int, limit: int) -> list[Transfer]:
        state = self._state
        due = sorted((at, t) for t, at in state.open_pendings.items() if 0 < at <= now_us)[:limit]
        return [state.transfers[t] for _, t in due]

    def postings(
        self, account_id: str, start_us: int, end_us: int, after_seq: int, limit: int
    ) -> list[Posting]:
        found: list[Posting] = []
        for seq, t in enumerate(self._state.log[after_seq:], start=after_seq + 1):
            if len(found) == limit:
                break
            if t.phase in (Phase.PENDING, Phase.VOID) or not start_us <= t.timestamp < end_us:
                continue
            assert t.amount is not None
            if t.credit_account_id == account_id:
                found.append(Posting(seq, t.id, t.timestamp, t.code, t.ref, t.amount))
            elif t.debit_account_id == account_id:
                found.append(Posting(seq, t.id, t.timestamp, t.code, t.ref, -t.amount))
        return found

    def net_posted(self, account_id: str, start_us: int, end_us: int) -> int:
        total = 0
        for t in self._state.log:
            if t.phase in (Phase.PENDING, Phase.VOID) or not start_us <= t.timestamp < end_us:
                continue
            assert t.amount is not None
            if t.credit_account_id == account_id:
                total += t.amount
            elif t.debit_account_id == account_id:
                total -= t.amount
        return total

    def net_by_currency(self) -> dict[str, tuple[int, int]]:
        return net_by_currency(self._state.accounts.values())

    def activity(self) -> Activity:
        state = self._state
        return Activity(self._batches, len(state.log), len(state.open_pendings))
