"""Double-entry accounts and transfers: the ledger's pure model.

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
account, and nothing of its chain is applied. Every running total stays within 64 bits (:data:`MAX_AMOUNT`),
which is what the store keeps.

How a batch of transfers is applied is :mod:`tranche.ledger.planning`; this module holds the values.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from tranche.ledger.errors import LedgerError
from tranche.shared.money import MAX_MINOR

MAX_AMOUNT = MAX_MINOR
"""The largest amount and the largest running total, in minor units: the store keeps them as 64-bit integers."""


class AccountKind(enum.StrEnum):
    """What an account stands for; the flows choose its flags."""

    WORLD = "world"  # money outside the platform (banks); deposits come from it, withdrawals go to it
    INVESTOR_CASH = "investor_cash"  # cash the platform holds for an investor
    INVESTOR_HOLDING = "investor_holding"  # principal of one loan an investor holds (through one bid)
    LOAN_PRINCIPAL = "loan_principal"  # the loan's side of every holding: minus the principal investors hold
    LENDER_SETTLEMENT = "lender_settlement"  # what the platform owes a lender (or is owed, when negative)
    PLATFORM_REVENUE = "platform_revenue"  # the platform's margin on interest


class Phase(enum.StrEnum):
    """What a transfer does: moves posted money, reserves it, or resolves a reservation."""

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
    """What became of a submitted transfer."""

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


def net_by_currency(accounts: Iterable[Account]) -> dict[str, tuple[int, int]]:
    """Per currency, the sums of posted and of pending ``credits - debits``; both are zero in a sound ledger."""
    sums: dict[str, list[int]] = {}
    for a in accounts:
        s = sums.setdefault(a.currency, [0, 0])
        s[0] += a.credits_posted - a.debits_posted
        s[1] += a.credits_pending - a.debits_pending
    return {currency: (s[0], s[1]) for currency, s in sums.items()}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware instant: how the ledger stamps what it stores."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The UTC instant ``micros`` microseconds after the epoch."""
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)
