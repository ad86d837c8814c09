"""Double-entry accounts and transfers, and the pure rule that applies a batch of transfers.

The model follows TigerBeetle's: an account keeps four running totals (``debits_pending``,
``debits_posted``, ``credits_pending``, ``credits_posted``) in integer minor units of one currency, and
changes only through transfers, which debit one account and credit another of the same currency by the same
amount. Hence the sum of ``credits - debits`` over all accounts of a currency is always zero, posted and pending
alike. A transfer is one of four phases:

* ``single``: moves posted money at once;
* ``pending``: reserves money on both accounts (it counts against the debit account's available balance)
  and may carry a timeout after which it can no longer be posted;
* ``post``: turns a pending transfer into posted money, for its whole amount or less (the rest is released);
* ``void``: releases a pending transfer.

Transfers are immutable and carry a client-chosen id. Submitting an id again with the same body has no
effect (its result is ``exists``); with another body it is a :class:`TransferExistsError`. Transfers flagged
``linked`` form a chain with the transfers after them up to the first one not flagged: the chain applies
whole or not at all. A transfer that would overdraw a flagged account is refused with an error naming the
account, and nothing of its chain is applied.

:func:`plan_batch` is the whole rule: it takes the stored state a batch touches (a :class:`Snapshot`), applies
the batch in memory and returns what to write. It does no I/O and reads no clock, which is what lets the SQL
adapter load everything a batch of thousands of transfers needs in a few queries and write it back with
``executemany``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from tranche.ledger.errors import (
    AccountCurrencyError,
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


class AccountKind(enum.StrEnum):
    """What an account stands for; the flows choose its flags."""

    WORLD = "world"  # money outside the platform (banks); deposits come from it, withdrawals go to it
    INVESTOR_CASH = "investor_cash"  # cash the platform holds for an investor
    INVESTOR_HOLDING = "investor_holding"  # principal of one loan an investor holds (through one bid)
    LOAN_PRINCIPAL = "loan_principal"  # the loan's side of every holding: minus the principal investors hold
    LENDER_SETTLEMENT = "lender_settlement"  # what the platform owes a lender (or is owed, when negative)
    PLATFORM_REVENUE = "platform_revenue"  # the platform's margin on interest


class Phase(enum.StrEnum):
    SINGLE = "single"
    PENDING = "pending"
    POST = "post"
    VOID = "void"


@dataclass(frozen=True, slots=True)
class Account:
    """An account and its running totals. ``credits_posted - debits_posted`` is its posted balance.

    ``debits_must_not_exceed_credits``: ``debits_pending + debits_posted <= credits_posted`` always (an
    investor's cash: what is spent or reserved never exceeds what came in). ``credits_must_not_exceed_debits``
    is the mirror rule.
    """

    id: str
    currency: str
    kind: AccountKind
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False
    owner_id: str | None = None  # the investor or lender it belongs to
    loan_id: str | None = None
    portfolio_id: str | None = None
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0

    @property
    def balance(self) -> int:
        """Posted credits minus posted debits."""
        return self.credits_posted - self.debits_posted

    @property
    def available(self) -> int:
        """What a credit-normal account can still spend: posted balance less pending debits."""
        return self.credits_posted - self.debits_posted - self.debits_pending

    def same_definition(self, other: Account) -> str | None:
        """Name of the first defining field that differs from ``other``, or None when both define alike."""
        for name in (
            "currency",
            "kind",
            "debits_must_not_exceed_credits",
            "credits_must_not_exceed_debits",
            "owner_id",
            "loan_id",
            "portfolio_id",
        ):
            if getattr(self, name) != getattr(other, name):
                return name
        return None


@dataclass(frozen=True, slots=True)
class Transfer:
    """One movement of ``amount`` minor units from ``debit_account_id`` to ``credit_account_id``.

    For a post or a void, ``pending_id`` names the pending transfer; the accounts may be left None (they are
    the pending transfer's) and so may ``amount`` (the whole pending amount). ``timeout_us`` (pending only, in
    microseconds, 0 for never) bounds how long the reservation may wait for its post. ``code`` says what the
    transfer is for (``deposit``, ``funding``, ``interest``, ...) and ``ref`` what it is about (a loan, a bid).

    ``timestamp`` (microseconds since the epoch) and ``expires_at`` are set by the ledger when it applies the
    transfer; a caller leaves them 0.
    """

    id: str
    debit_account_id: str | None
    credit_account_id: str | None
    amount: int | None
    currency: str
    code: str = ""
    ref: str = ""
    phase: Phase = Phase.SINGLE
    pending_id: str | None = None
    timeout_us: int = 0
    linked: bool = False
    timestamp: int = 0
    expires_at: int = 0

    @classmethod
    def post(
        cls,
        id: str,
        pending_id: str,
        currency: str,
        *,
        amount: int | None = None,
        code: str = "",
        ref: str = "",
        linked: bool = False,
    ) -> Transfer:
        """A post of ``pending_id`` (its whole amount when ``amount`` is None)."""
        return cls(id, None, None, amount, currency, code, ref, Phase.POST, pending_id, linked=linked)

    @classmethod
    def void(
        cls, id: str, pending_id: str, currency: str, *, code: str = "", ref: str = "", linked: bool = False
    ) -> Transfer:
        """A void of ``pending_id``."""
        return cls(id, None, None, None, currency, code, ref, Phase.VOID, pending_id, linked=linked)


# Fields compared when an id is submitted again; the caller's None means "whatever the pending one had".
_BODY_FIELDS = (
    "debit_account_id",
    "credit_account_id",
    "amount",
    "currency",
    "code",
    "ref",
    "phase",
    "pending_id",
    "timeout_us",
)


def body_difference(submitted: Transfer, stored: Transfer) -> str | None:
    """The first field in which ``submitted`` contradicts ``stored``, or None when it is the same transfer."""
    for name in _BODY_FIELDS:
        mine = getattr(submitted, name)
        if mine is None and name in ("debit_account_id", "credit_account_id", "amount"):
            continue
        if mine != getattr(stored, name):
            return name
    return None


class Outcome(enum.StrEnum):
    CREATED = "created"
    EXISTS = "exists"  # the same transfer was applied before; nothing changed
    FAILED = "failed"


class TransferResult(NamedTuple):
    """What became of one submitted transfer; ``error`` is set exactly when ``outcome`` is ``failed``.

    A named tuple rather than a dataclass: a batch makes one per transfer, and tuples are cheapest to build.
    """

    id: str
    outcome: Outcome
    error: LedgerError | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is not Outcome.FAILED


@dataclass(slots=True)
class Snapshot:
    """The stored state a batch needs: its accounts, the stored transfers that share its ids, the pending
    transfers its posts and voids name, and which of those were already resolved (pending id → resolver id)."""

    accounts: dict[str, Account]
    existing: dict[str, Transfer] = field(default_factory=dict)
    pendings: dict[str, Transfer] = field(default_factory=dict)
    resolved: dict[str, str] = field(default_factory=dict)


# An account's running totals: (debits_pending, debits_posted, credits_pending, credits_posted).
Totals = tuple[int, int, int, int]


@dataclass(slots=True)
class BatchPlan:
    """What applying a batch changes: results in submission order, the transfers to store (in order, as
    accepted: posts and voids carry their pending transfer's accounts; see :meth:`stamped`), the new
    :data:`Totals` of the accounts that changed, and the batch's timestamp."""

    results: list[TransferResult]
    created: list[Transfer]
    changed: dict[str, Totals]
    now_us: int = 0

    def stamped(self) -> list[Transfer]:
        """The created transfers as stored: timestamped, with their expiry, unlinked."""
        return [
            replace(t, linked=False, timestamp=self.now_us, expires_at=expires_at(t, self.now_us))
            for t in self.created
        ]


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


# Running totals as a mutable list, indexed like this, while a batch is applied.
_DP, _DD, _CP, _CD = 0, 1, 2, 3  # debits pending, debits posted, credits pending, credits posted


class _Working:
    """Mutable state of one batch, with an undo log so that a failed chain leaves no trace."""

    def __init__(self, snapshot: Snapshot, now_us: int) -> None:
        self.snapshot = snapshot
        self.accounts = snapshot.accounts
        self.now_us = now_us
        self.totals: dict[str, list[int]] = {}
        self.created: dict[str, Transfer] = {}
        self.order: list[str] = []
        self.resolved: dict[str, str] = {}
        # (what, key, index, amount): what is "totals", "created" or "resolved"
        self.undo: list[tuple[str, str, int, int]] = []

    def account(self, account_id: str, transfer_id: str, side: str) -> Account:
        account = self.accounts.get(account_id)
        if account is None:
            raise _Refused(
                UnknownAccountError(
                    f"transfer {transfer_id} names account {account_id}, which does not exist",
                    record=account_id,
                    field=side,
                    transfer_id=transfer_id,
                )
            )
        return account

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

    def add(self, account: Account, index: int, amount: int) -> None:
        totals = self.totals_of(account)
        self.undo.append(("totals", account.id, index, amount))
        totals[index] += amount

    def lookup(self, transfer_id: str) -> Transfer | None:
        return self.created.get(transfer_id) or self.snapshot.existing.get(transfer_id)

    def pending(self, pending_id: str) -> Transfer | None:
        found = self.created.get(pending_id) or self.snapshot.pendings.get(pending_id)
        if found is None:
            found = self.snapshot.existing.get(pending_id)
        return found if found is not None and found.phase is Phase.PENDING else None

    def resolver(self, pending_id: str) -> str | None:
        return self.resolved.get(pending_id) or self.snapshot.resolved.get(pending_id)

    def commit_point(self) -> int:
        return len(self.undo)

    def rollback_to(self, mark: int) -> None:
        while len(self.undo) > mark:
            what, key, index, amount = self.undo.pop()
            if what == "totals":
                self.totals[key][index] -= amount
            elif what == "created":
                del self.created[key]
                self.order.pop()
            else:
                del self.resolved[key]


def _check_flags(work: _Working, debit: Account, credit: Account, transfer: Transfer) -> None:
    if debit.debits_must_not_exceed_credits:
        dp, dd, _, cd = work.totals_of(debit)
        if dp + dd > cd:
            amount = transfer.amount or 0
            available = cd - dd - dp + amount
            raise _Refused(
                OverdraftError(
                    f"transfer {transfer.id} would overdraw account {debit.id}: "
                    f"{available} available, {amount} needed ({debit.currency} minor units)",
                    record=debit.id,
                    transfer_id=transfer.id,
                    available=available,
                    needed=amount,
                )
            )
    if credit.credits_must_not_exceed_debits:
        _, dd, cp, cd = work.totals_of(credit)
        if cp + cd > dd:
            raise _Refused(
                CreditCeilingError(
                    f"transfer {transfer.id} would credit account {credit.id} beyond its debits",
                    record=credit.id,
                    field="credits",
                    transfer_id=transfer.id,
                )
            )


def _invalid(transfer: Transfer, message: str, field: str) -> _Refused:
    return _Refused(
        InvalidTransferError(
            f"transfer {transfer.id}: {message}", record=transfer.id, field=field, transfer_id=transfer.id
        )
    )


def _accounts_of(work: _Working, transfer: Transfer) -> tuple[Account, Account]:
    if transfer.debit_account_id is None or transfer.credit_account_id is None:
        raise _invalid(transfer, "names no account", "debit_account_id")
    if transfer.debit_account_id == transfer.credit_account_id:
        raise _invalid(transfer, "debits and credits the same account", "credit_account_id")
    debit = work.account(transfer.debit_account_id, transfer.id, "debit_account_id")
    credit = work.account(transfer.credit_account_id, transfer.id, "credit_account_id")
    for account, side in ((debit, "debit_account_id"), (credit, "credit_account_id")):
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
    return debit, credit


def _apply_one(work: _Working, transfer: Transfer) -> Outcome:
    """Apply one transfer to the working state, or raise _Refused. Returns CREATED or EXISTS."""
    stored = work.lookup(transfer.id)
    if stored is not None:
        differs = body_difference(transfer, stored)
        if differs is not None:
            raise _Refused(
                TransferExistsError(
                    f"transfer {transfer.id} exists with another {differs}",
                    record=transfer.id,
                    field=differs,
                    transfer_id=transfer.id,
                )
            )
        return Outcome.EXISTS
    if transfer.phase in (Phase.SINGLE, Phase.PENDING):
        if transfer.pending_id is not None:
            raise _invalid(transfer, "only a post or a void names a pending transfer", "pending_id")
        if transfer.amount is None or transfer.amount < 1:
            raise _invalid(transfer, f"amount must be at least 1, not {transfer.amount}", "amount")
        if transfer.timeout_us < 0 or (transfer.timeout_us and transfer.phase is Phase.SINGLE):
            raise _invalid(
                transfer, "only a pending transfer has a timeout, and it is not negative", "timeout_us"
            )
        debit, credit = _accounts_of(work, transfer)
        if transfer.phase is Phase.SINGLE:
            work.add(debit, _DD, transfer.amount)
            work.add(credit, _CD, transfer.amount)
        else:
            work.add(debit, _DP, transfer.amount)
            work.add(credit, _CP, transfer.amount)
        # Kept as submitted: the whole batch shares one timestamp, stamped when it is written.
        final = transfer
        _check_flags(work, debit, credit, transfer)
    else:
        if transfer.pending_id is None:
            raise _invalid(transfer, "a post or void must name its pending transfer", "pending_id")
        if transfer.timeout_us:
            raise _invalid(transfer, "only a pending transfer has a timeout", "timeout_us")
        pending = work.pending(transfer.pending_id)
        if pending is None:
            raise _Refused(
                PendingTransferNotFoundError(
                    f"transfer {transfer.id} names pending transfer {transfer.pending_id}, which does not exist",
                    record=transfer.pending_id,
                    field="pending_id",
                    transfer_id=transfer.id,
                )
            )
        resolver = work.resolver(pending.id)
        if resolver is not None:
            raise _Refused(
                PendingTransferResolvedError(
                    f"pending transfer {pending.id} was already resolved by {resolver}",
                    record=pending.id,
                    field="pending_id",
                    transfer_id=transfer.id,
                )
            )
        for name in ("debit_account_id", "credit_account_id", "currency"):
            mine = getattr(transfer, name)
            if mine is not None and mine != getattr(pending, name):
                raise _invalid(transfer, f"its {name} differs from pending transfer {pending.id}'s", name)
        assert pending.amount is not None and pending.debit_account_id and pending.credit_account_id
        debit = work.account(pending.debit_account_id, transfer.id, "debit_account_id")
        credit = work.account(pending.credit_account_id, transfer.id, "credit_account_id")
        if transfer.phase is Phase.POST:
            if pending.expires_at and work.now_us >= pending.expires_at:
                raise _Refused(
                    PendingTransferExpiredError(
                        f"pending transfer {pending.id} expired before transfer {transfer.id} posted it",
                        record=pending.id,
                        field="timeout_us",
                        transfer_id=transfer.id,
                    )
                )
            amount = pending.amount if transfer.amount is None else transfer.amount
            if amount < 1 or amount > pending.amount:
                raise _Refused(
                    PostExceedsPendingError(
                        f"transfer {transfer.id} posts {amount} of pending transfer {pending.id}, "
                        f"which reserved {pending.amount}",
                        record=transfer.id,
                        field="amount",
                        transfer_id=transfer.id,
                    )
                )
            work.add(debit, _DD, amount)
            work.add(credit, _CD, amount)
        else:
            amount = pending.amount
            if transfer.amount is not None and transfer.amount != amount:
                raise _invalid(transfer, f"a void releases the whole {amount} reserved", "amount")
        work.add(debit, _DP, -pending.amount)
        work.add(credit, _CP, -pending.amount)
        final = replace(
            transfer,
            debit_account_id=debit.id,
            credit_account_id=credit.id,
            amount=amount,
        )
        work.resolved[pending.id] = transfer.id
        work.undo.append(("resolved", pending.id, 0, 0))
        if transfer.phase is Phase.POST:
            _check_flags(work, debit, credit, final)
    work.created[transfer.id] = final
    work.order.append(transfer.id)
    work.undo.append(("created", transfer.id, 0, 0))
    return Outcome.CREATED


def chains(transfers: Sequence[Transfer]) -> list[tuple[int, int]]:
    """``[start, stop)`` index ranges of the linked chains of a batch (an unlinked transfer is a chain of one).

    A batch whose last transfer is still ``linked`` leaves that chain open; it is closed at the end of the
    batch and fails as a whole (see :func:`plan_batch`).
    """
    ranges: list[tuple[int, int]] = []
    start = 0
    for index, transfer in enumerate(transfers):
        if not transfer.linked:
            ranges.append((start, index + 1))
            start = index + 1
    if start < len(transfers):
        ranges.append((start, len(transfers)))
    return ranges


def _apply_fast(
    work: _Working, transfers: Sequence[Transfer], results: list[TransferResult | None]
) -> Iterator[tuple[int, int]]:
    """Apply the common case inline (an unlinked, new, valid single transfer within its accounts' flags) and
    yield the ``[start, stop)`` range of every other chain for the general path, in order.

    The general path would reach the same result; this one only skips its checks' bookkeeping, which is most
    of the time a batch takes. A transfer applied here needs no undo entry: a chain of one that succeeded is
    never rolled back.
    """
    accounts = work.accounts
    totals = work.totals
    created = work.created
    existing = work.snapshot.existing
    order = work.order
    single = Phase.SINGLE
    count = len(transfers)
    index = 0
    while index < count:
        t = transfers[index]
        if not t.linked and t.phase is single and t.pending_id is None and not t.timeout_us:
            tid, amount = t.id, t.amount
            debit_id, credit_id = t.debit_account_id, t.credit_account_id
            if tid not in created and tid not in existing and amount is not None and amount >= 1:
                debit = accounts.get(debit_id) if debit_id is not None else None
                credit = accounts.get(credit_id) if credit_id is not None else None
                if (
                    debit is not None
                    and credit is not None
                    and debit is not credit
                    and debit.currency == t.currency == credit.currency
                ):
                    dt = totals.get(debit.id) or work.totals_of(debit)
                    ct = totals.get(credit.id) or work.totals_of(credit)
                    if (
                        not debit.debits_must_not_exceed_credits or dt[_DP] + dt[_DD] + amount <= dt[_CD]
                    ) and (
                        not credit.credits_must_not_exceed_debits or ct[_CP] + ct[_CD] + amount <= ct[_DD]
                    ):
                        dt[_DD] += amount
                        ct[_CD] += amount
                        created[tid] = t
                        order.append(tid)
                        results[index] = TransferResult(tid, Outcome.CREATED)
                        index += 1
                        continue
        stop = index
        while stop < count and transfers[stop].linked:
            stop += 1
        stop = min(stop + 1, count)
        yield index, stop
        index = stop


def plan_batch(transfers: Sequence[Transfer], snapshot: Snapshot, now_us: int) -> BatchPlan:
    """Apply ``transfers`` in order to ``snapshot`` and return what changed; ``now_us`` stamps them.

    Each linked chain applies whole or not at all. Later transfers see the effect of earlier ones in the same
    batch (a post can follow its pending transfer, a reused id in the same batch is ``exists``).
    """
    work = _Working(snapshot, now_us)
    results: list[TransferResult | None] = [None] * len(transfers)
    for start, stop in _apply_fast(work, transfers, results):
        mark = work.commit_point()
        failed_at: int | None = None
        error: LedgerError | None = None
        outcomes: list[Outcome] = []
        if transfers[stop - 1].linked:
            failed_at = stop - 1
            last = transfers[stop - 1]
            error = InvalidTransferError(
                f"transfer {last.id} is linked to a next transfer but ends the batch",
                record=last.id,
                field="linked",
                transfer_id=last.id,
            )
        else:
            for index in range(start, stop):
                try:
                    outcomes.append(_apply_one(work, transfers[index]))
                except _Refused as refused:
                    failed_at, error = index, refused.error
                    break
        if failed_at is None:
            for index, outcome in zip(range(start, stop), outcomes, strict=True):
                results[index] = TransferResult(transfers[index].id, outcome)
            continue
        work.rollback_to(mark)
        assert error is not None
        for index in range(start, stop):
            if index == failed_at:
                results[index] = TransferResult(transfers[index].id, Outcome.FAILED, error)
            else:
                failed_id = transfers[failed_at].id
                results[index] = TransferResult(
                    transfers[index].id,
                    Outcome.FAILED,
                    LinkedTransferFailedError(
                        f"transfer {transfers[index].id} was not applied: "
                        f"transfer {failed_id} of its linked chain failed ({error.code})",
                        record=failed_id,
                        transfer_id=transfers[index].id,
                    ),
                )
    changed: dict[str, Totals] = {}
    accounts = snapshot.accounts
    for account_id, totals in work.totals.items():
        before = accounts[account_id]
        after = (totals[0], totals[1], totals[2], totals[3])
        if after != (
            before.debits_pending,
            before.debits_posted,
            before.credits_pending,
            before.credits_posted,
        ):
            changed[account_id] = after
    final_results = [r for r in results if r is not None]
    return BatchPlan(final_results, [work.created[i] for i in work.order], changed, now_us)


def net_by_currency(accounts: Iterable[Account]) -> dict[str, tuple[int, int]]:
    """Per currency, the sums of posted and of pending ``credits - debits``; both are zero in a sound ledger."""
    sums: dict[str, list[int]] = {}
    for a in accounts:
        s = sums.setdefault(a.currency, [0, 0])
        s[0] += a.credits_posted - a.debits_posted
        s[1] += a.credits_pending - a.debits_pending
    return {currency: (s[0], s[1]) for currency, s in sums.items()}


def apply_in_memory(
    accounts: Mapping[str, Account],
    transfers: Sequence[Transfer],
    now_us: int,
    stored: Mapping[str, Transfer],
) -> tuple[BatchPlan, dict[str, Account]]:
    """Plan a batch against fully in-memory state (all accounts, all stored transfers); for tests and the
    in-memory ledger. Returns the plan and the accounts after it."""
    resolved = {t.pending_id: t.id for t in stored.values() if t.pending_id is not None}
    snapshot = Snapshot(dict(accounts), dict(stored), dict(stored), resolved)
    plan = plan_batch(transfers, snapshot, now_us)
    plan.created = plan.stamped()
    after = dict(accounts)
    for account_id, (dp, dd, cp, cd) in plan.changed.items():
        after[account_id] = replace(
            after[account_id], debits_pending=dp, debits_posted=dd, credits_pending=cp, credits_posted=cd
        )
    return plan, after
