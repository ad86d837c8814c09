"""The rule that applies a batch of transfers, as a plan: pure, no I/O, no clock.

:func:`plan_batch` takes the stored state a batch touches (a :class:`Snapshot`: its accounts, the stored
transfers that share its ids, the pending transfers its posts and voids name), applies the batch in memory and
returns what to write (a :class:`BatchPlan`). A store loads the snapshot of a batch of tens of thousands of
transfers in a few queries and writes the plan back in a few statements; the rule itself never waits on the
database.

Every transfer takes the same path: it is checked in full before it changes anything, so a transfer alone (the
common case) needs no undo; the transfers of a linked chain log what they change and the chain is undone when
one of them is refused. Accounts a batch may open (an investor's first deposit, the holding of a new bid) are
proposed in the snapshot and opened only when a transfer that is applied uses them: a refused request leaves
no empty account behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from tranche.ledger.domain import (
    MAX_AMOUNT,
    Account,
    Outcome,
    Phase,
    Transfer,
    TransferResult,
    body_difference,
)
from tranche.ledger.errors import (
    AccountCurrencyError,
    AmountOverflowError,
    CreditCeilingError,
    InvalidTransferError,
    LedgerError,
    LinkedTransferFailedError,
    OverdraftError,
    PendingTransferExpiredError,
    PendingTransferNotFoundError,
    PendingTransferResolvedError,
    PostExceedsPendingError,
    TransferExistsError,
    UnknownAccountError,
)

# An account's running totals: (debits_pending, debits_posted, credits_pending, credits_posted).
Totals = tuple[int, int, int, int]
_DP, _DD, _CP, _CD = 0, 1, 2, 3  # indexes of the running totals while a batch is applied


@dataclass(slots=True)
class Snapshot:
    """The stored state a batch needs.

    ``accounts``: the stored accounts the batch names, plus the accounts it may open (``proposed``: their ids,
    with zero totals); ``existing``: stored transfers that share an id with the batch; ``pendings``: the pending
    transfers its posts and voids name; ``resolved``: which of those were already posted or voided (pending id →
    the id of the transfer that did it).
    """

    accounts: dict[str, Account]
    existing: dict[str, Transfer] = field(default_factory=dict)
    pendings: dict[str, Transfer] = field(default_factory=dict)
    resolved: dict[str, str] = field(default_factory=dict)
    proposed: frozenset[str] = frozenset()


@dataclass(slots=True)
class BatchPlan:
    """What applying a batch changes.

    ``results``: one per submitted transfer, in order. ``created``: the transfers to store, in order, as accepted
    (a post or a void carries its pending transfer's accounts and the amount it moved). ``changed``: the new
    :data:`Totals` of every account whose totals moved; ``opened``: the proposed accounts among them, which the
    store creates with those totals. ``now_us`` stamps the batch.
    """

    results: list[TransferResult]
    created: list[Transfer]
    changed: dict[str, Totals]
    opened: list[Account]
    now_us: int = 0
    before: Mapping[str, Account] = field(default_factory=dict)  # stored accounts, and the ones opened

    def after(self, account_id: str) -> Account | None:
        """The account as the batch leaves it; None when it is not stored and the batch did not open it."""
        account = self.before.get(account_id)
        totals = self.changed.get(account_id)
        if account is None or totals is None:
            return account
        dp, dd, cp, cd = totals
        return replace(account, debits_pending=dp, debits_posted=dd, credits_pending=cp, credits_posted=cd)

    def stamped(self) -> list[Transfer]:
        """The created transfers as stored: timestamped, with their expiry, unlinked."""
        return [
            replace(t, linked=False, timestamp=self.now_us, expires_at=expires_at(t, self.now_us))
            for t in self.created
        ]

    @property
    def first_error(self) -> LedgerError | None:
        """The error of the first refused transfer, if any."""
        for result in self.results:
            if result.error is not None:
                return result.error
        return None


def expires_at(transfer: Transfer, now_us: int) -> int:
    """When a pending transfer applied at ``now_us`` stops being postable (0: never, or not pending)."""
    if transfer.phase is Phase.PENDING and transfer.timeout_us:
        return now_us + transfer.timeout_us
    return 0


def needed_ids(transfers: Iterable[Transfer]) -> tuple[set[str], set[str], set[str]]:
    """Transfer ids, pending ids and account ids a batch refers to directly (before pendings are loaded)."""
    ids: set[str] = set()
    pending_ids: set[str] = set()
    account_ids: set[str] = set()
    for t in transfers:
        ids.add(t.id)
        if t.pending_id is not None:
            pending_ids.add(t.pending_id)
        if t.debit_account_id is not None:
            account_ids.add(t.debit_account_id)
        if t.credit_account_id is not None:
            account_ids.add(t.credit_account_id)
    return ids, pending_ids, account_ids


class _Refused(Exception):
    def __init__(self, error: LedgerError) -> None:
        self.error = error


def _invalid(transfer: Transfer, message: str, field: str) -> _Refused:
    return _Refused(
        InvalidTransferError(
            f"transfer {transfer.id}: {message}", record=transfer.id, field=field, transfer_id=transfer.id
        )
    )


def _overflow(transfer: Transfer, account: Account, side: str) -> _Refused:
    return _Refused(
        AmountOverflowError(
            f"transfer {transfer.id} would take the {side} of account {account.id} past {MAX_AMOUNT} "
            f"{account.currency} minor units, the most the ledger keeps",
            record=account.id,
            field="amount",
            transfer_id=transfer.id,
        )
    )


class _Batch:
    """Mutable state of one batch being applied."""

    __slots__ = (
        "accounts",
        "chain_log",
        "created",
        "existing",
        "now_us",
        "order",
        "pendings",
        "resolved",
        "totals",
    )

    def __init__(self, snapshot: Snapshot, now_us: int) -> None:
        self.accounts = snapshot.accounts
        self.existing = snapshot.existing
        self.pendings = snapshot.pendings
        self.resolved: dict[str, str] = dict(snapshot.resolved)
        self.now_us = now_us
        self.totals: dict[str, list[int]] = {}
        self.created: dict[str, Transfer] = {}
        self.order: list[str] = []
        # While a linked chain is applied: (totals, index, amount) of every change, to undo it.
        self.chain_log: list[tuple[list[int], int, int]] | None = None

    def totals_of(self, account: Account) -> list[int]:
        totals = self.totals.get(account.id)
        if totals is None:
            totals = [
                account.debits_pending,
                account.debits_posted,
                account.credits_pending,
                account.credits_posted,
            ]
            self.totals[account.id] = totals
        return totals

    def add(self, totals: list[int], index: int, amount: int) -> None:
        totals[index] += amount
        if self.chain_log is not None:
            self.chain_log.append((totals, index, amount))

    def account(self, account_id: str | None, transfer: Transfer, side: str) -> Account:
        account = self.accounts.get(account_id) if account_id is not None else None
        if account is None:
            raise _Refused(
                UnknownAccountError(
                    f"transfer {transfer.id} names account {account_id}, which does not exist",
                    record=account_id,
                    field=side,
                    transfer_id=transfer.id,
                )
            )
        if account.currency != transfer.currency:
            raise _Refused(
                AccountCurrencyError(
                    f"transfer {transfer.id} is in {transfer.currency} but account {account.id} "
                    f"is in {account.currency}",
                    record=account.id,
                    field=side,
                    transfer_id=transfer.id,
                )
            )
        return account

    def apply(self, t: Transfer) -> Outcome:
        """Apply one transfer, or raise _Refused having changed nothing. Returns CREATED or EXISTS."""
        stored = self.created.get(t.id) or self.existing.get(t.id)
        if stored is not None:
            differs = body_difference(t, stored)
            if differs is not None:
                raise _Refused(
                    TransferExistsError(
                        f"transfer {t.id} exists with another {differs}",
                        record=t.id,
                        field=differs,
                        transfer_id=t.id,
                    )
                )
            return Outcome.EXISTS
        moves = t.phase is Phase.SINGLE or t.phase is Phase.PENDING
        final = self._move(t) if moves else self._resolve(t)
        self.created[t.id] = final
        self.order.append(t.id)
        return Outcome.CREATED

    def _move(self, t: Transfer) -> Transfer:
        amount = t.amount
        if t.pending_id is not None:
            raise _invalid(t, "only a post or a void names a pending transfer", "pending_id")
        if amount is None or amount < 1 or amount > MAX_AMOUNT:
            raise _invalid(t, f"amount must be between 1 and {MAX_AMOUNT}, not {amount}", "amount")
        if t.timeout_us < 0 or (t.timeout_us and t.phase is Phase.SINGLE):
            raise _invalid(t, "only a pending transfer has a timeout, and it is not negative", "timeout_us")
        if t.debit_account_id == t.credit_account_id:
            raise _invalid(t, "debits and credits the same account", "credit_account_id")
        debit = self.account(t.debit_account_id, t, "debit_account_id")
        credit = self.account(t.credit_account_id, t, "credit_account_id")
        dt = self.totals_of(debit)
        ct = self.totals_of(credit)
        if debit.debits_must_not_exceed_credits and dt[_DP] + dt[_DD] + amount > dt[_CD]:
            available = dt[_CD] - dt[_DD] - dt[_DP]
            raise _Refused(
                OverdraftError(
                    f"transfer {t.id} would overdraw account {debit.id}: "
                    f"{available} available, {amount} needed ({debit.currency} minor units)",
                    record=debit.id,
                    transfer_id=t.id,
                    available=available,
                    needed=amount,
                )
            )
        if credit.credits_must_not_exceed_debits and ct[_CP] + ct[_CD] + amount > ct[_DD]:
            raise _Refused(
                CreditCeilingError(
                    f"transfer {t.id} would credit account {credit.id} beyond its debits",
                    record=credit.id,
                    field="credits",
                    transfer_id=t.id,
                )
            )
        debit_index, credit_index = (_DD, _CD) if t.phase is Phase.SINGLE else (_DP, _CP)
        if dt[debit_index] + amount > MAX_AMOUNT:
            raise _overflow(t, debit, "debits")
        if ct[credit_index] + amount > MAX_AMOUNT:
            raise _overflow(t, credit, "credits")
        self.add(dt, debit_index, amount)
        self.add(ct, credit_index, amount)
        return t  # kept as submitted: the whole batch shares one timestamp, stamped when it is written

    def _resolve(self, t: Transfer) -> Transfer:
        if t.pending_id is None:
            raise _invalid(t, "a post or void must name its pending transfer", "pending_id")
        if t.timeout_us:
            raise _invalid(t, "only a pending transfer has a timeout", "timeout_us")
        pending = (
            self.created.get(t.pending_id)
            or self.pendings.get(t.pending_id)
            or self.existing.get(t.pending_id)
        )
        if pending is None or pending.phase is not Phase.PENDING:
            raise _Refused(
                PendingTransferNotFoundError(
                    f"transfer {t.id} names pending transfer {t.pending_id}, which does not exist",
                    record=t.pending_id,
                    field="pending_id",
                    transfer_id=t.id,
                )
            )
        resolver = self.resolved.get(pending.id)
        if resolver is not None:
            raise _Refused(
                PendingTransferResolvedError(
                    f"pending transfer {pending.id} was already resolved by {resolver}",
                    record=pending.id,
                    field="pending_id",
                    transfer_id=t.id,
                )
            )
        for name in ("debit_account_id", "credit_account_id", "currency"):
            mine = getattr(t, name)
            if mine is not None and mine != getattr(pending, name):
                raise _invalid(t, f"its {name} differs from pending transfer {pending.id}'s", name)
        assert pending.amount is not None
        debit = self.account(pending.debit_account_id, t, "debit_account_id")
        credit = self.account(pending.credit_account_id, t, "credit_account_id")
        dt = self.totals_of(debit)
        ct = self.totals_of(credit)
        if t.phase is Phase.POST:
            if pending.expires_at and self.now_us >= pending.expires_at:
                raise _Refused(
                    PendingTransferExpiredError(
                        f"pending transfer {pending.id} expired before transfer {t.id} posted it",
                        record=pending.id,
                        field="timeout_us",
                        transfer_id=t.id,
                    )
                )
            amount = pending.amount if t.amount is None else t.amount
            if amount < 1 or amount > pending.amount:
                raise _Refused(
                    PostExceedsPendingError(
                        f"transfer {t.id} posts {amount} of pending transfer {pending.id}, "
                        f"which reserved {pending.amount}",
                        record=t.id,
                        field="amount",
                        transfer_id=t.id,
                    )
                )
            if dt[_DD] + amount > MAX_AMOUNT:
                raise _overflow(t, debit, "debits")
            if ct[_CD] + amount > MAX_AMOUNT:
                raise _overflow(t, credit, "credits")
            # Moving reserved money to posted never adds to either side's debits plus credits: the flags hold.
            self.add(dt, _DD, amount)
            self.add(ct, _CD, amount)
        else:
            amount = pending.amount
            if t.amount is not None and t.amount != amount:
                raise _invalid(t, f"a void releases the whole {amount} reserved", "amount")
        self.add(dt, _DP, -pending.amount)
        self.add(ct, _CP, -pending.amount)
        self.resolved[pending.id] = t.id
        return replace(t, debit_account_id=debit.id, credit_account_id=credit.id, amount=amount)

    def undo_chain(self, log: list[tuple[list[int], int, int]], first: int) -> None:
        """Take back what the chain whose first created transfer is ``order[first]`` changed."""
        for totals, index, amount in reversed(log):
            totals[index] -= amount
        for transfer_id in self.order[first:]:
            undone = self.created.pop(transfer_id)
            if undone.pending_id is not None:
                del self.resolved[undone.pending_id]
        del self.order[first:]


def plan_batch(transfers: Sequence[Transfer], snapshot: Snapshot, now_us: int) -> BatchPlan:
    """Apply ``transfers`` in order to ``snapshot`` and return what changed; ``now_us`` stamps them.

    Each linked chain applies whole or not at all. Later transfers see the effect of earlier ones in the same
    batch (a post can follow its pending transfer, a reused id in the same batch is ``exists``).
    """
    batch = _Batch(snapshot, now_us)
    results: list[TransferResult] = []
    count = len(transfers)
    index = 0
    while index < count:
        t = transfers[index]
        if not t.linked:
            try:
                results.append(TransferResult(t.id, batch.apply(t)))
            except _Refused as refused:
                results.append(TransferResult(t.id, Outcome.FAILED, refused.error))
            index += 1
            continue
        stop = index
        while stop < count and transfers[stop].linked:
            stop += 1
        results.extend(_apply_chain(batch, transfers, index, stop))
        index = stop + 1
    return _plan(batch, snapshot, results, now_us)


def _apply_chain(batch: _Batch, transfers: Sequence[Transfer], start: int, last: int) -> list[TransferResult]:
    """Apply the chain ``transfers[start:last + 1]`` (``last`` is the first unlinked one, or ``len``)."""
    stop = min(last + 1, len(transfers))
    failed_at: int | None = None
    error: LedgerError | None = None
    outcomes: list[Outcome] = []
    if last == len(transfers):
        failed_at = stop - 1
        open_end = transfers[failed_at]
        error = InvalidTransferError(
            f"transfer {open_end.id} is linked to a next transfer but ends the batch",
            record=open_end.id,
            field="linked",
            transfer_id=open_end.id,
        )
    else:
        log: list[tuple[list[int], int, int]] = []
        first = len(batch.order)
        batch.chain_log = log
        try:
            for position in range(start, stop):
                try:
                    outcomes.append(batch.apply(transfers[position]))
                except _Refused as refused:
                    failed_at, error = position, refused.error
                    batch.undo_chain(log, first)
                    break
        finally:
            batch.chain_log = None
    if failed_at is None:
        return [TransferResult(transfers[p].id, o) for p, o in zip(range(start, stop), outcomes, strict=True)]
    assert error is not None
    failed_id = transfers[failed_at].id
    results = []
    for position in range(start, stop):
        transfer_id = transfers[position].id
        if position == failed_at:
            results.append(TransferResult(transfer_id, Outcome.FAILED, error))
            continue
        linked_error = LinkedTransferFailedError(
            f"transfer {transfer_id} was not applied: transfer {failed_id} of its linked chain failed ({error.code})",
            record=failed_id,
            transfer_id=transfer_id,
        )
        results.append(TransferResult(transfer_id, Outcome.FAILED, linked_error))
    return results


def _plan(batch: _Batch, snapshot: Snapshot, results: list[TransferResult], now_us: int) -> BatchPlan:
    changed: dict[str, Totals] = {}
    accounts = snapshot.accounts
    for account_id, totals in batch.totals.items():
        stored = accounts[account_id]
        after = (totals[0], totals[1], totals[2], totals[3])
        if after != (
            stored.debits_pending,
            stored.debits_posted,
            stored.credits_pending,
            stored.credits_posted,
        ):
            changed[account_id] = after
    created = [batch.created[i] for i in batch.order]
    opened: list[Account] = []
    if snapshot.proposed:
        # A proposed account is opened when an applied transfer names it, even if the batch leaves its totals
        # where they started (a reservation voided in the same batch): the stored transfer refers to it.
        used = {a for t in created for a in (t.debit_account_id, t.credit_account_id)}
        for account_id in sorted(snapshot.proposed & used):
            totals = batch.totals[account_id]
            changed[account_id] = (totals[0], totals[1], totals[2], totals[3])
            opened.append(accounts[account_id])
    unused = snapshot.proposed - {a.id for a in opened}
    known = {a: acc for a, acc in accounts.items() if a not in unused} if unused else accounts
    return BatchPlan(results, created, changed, opened, now_us, known)
