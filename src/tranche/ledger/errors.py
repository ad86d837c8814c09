"""The ledger's errors, one leaf per rule it enforces.

::

    TrancheError
    └── LedgerError
        ├── OverdraftError                      debits would exceed credits on a flagged account
        ├── CreditCeilingError                  credits would exceed debits on a flagged account
        ├── TransferExistsError (ConflictError) a reused transfer id with another body
        ├── AccountExistsError (ConflictError)  a reused account id with another definition
        ├── UnknownAccountError (NotFoundError) a transfer names an account that does not exist
        ├── AccountCurrencyError                a transfer's currency is not its accounts' currency
        ├── InvalidTransferError (ValidationError)  a malformed transfer (same account twice, amount < 1, ...)
        ├── AmountOverflowError (ValidationError)   an amount or a running total past 64-bit minor units
        ├── PendingTransferNotFoundError (NotFoundError)
        ├── PendingTransferResolvedError        the pending transfer was already posted or voided
        ├── PendingTransferExpiredError         the pending transfer timed out before it was posted
        ├── PostExceedsPendingError             a post for more than was reserved
        ├── LinkedTransferFailedError           another transfer of the same linked chain failed
        ├── ReservationNotFoundError (NotFoundError)  a funded or rolled-back bid the ledger never reserved
        ├── InsufficientCashError (ConflictError)   a withdrawal above the investor's available cash
        ├── IdempotencyKeyReusedError (ConflictError)  a deposit or withdrawal key reused for another one
        └── UnbalancedLedgerError               the database found a currency whose balances do not sum to zero

Each error names the record at fault (``record``: an account id or a transfer id) and, where it helps, the
field (``debits``, ``credits``, ``amount``, ``pending_id``, ...). ``transfer_id`` is the transfer refused. The
errors of the flows clients call (deposits, withdrawals) name what the client sent instead: the investor, the
idempotency key, the ``amount`` or ``currency`` field.
"""

from __future__ import annotations

from tranche.shared.errors import ConflictError, NotFoundError, TrancheError, ValidationError


class LedgerError(TrancheError):
    """Base of the ledger's errors."""

    code = "ledger_error"

    def __init__(
        self,
        message: str,
        *,
        record: str | None = None,
        field: str | None = None,
        transfer_id: str | None = None,
    ) -> None:
        super().__init__(message, record=record, field=field)
        self.transfer_id = transfer_id


class OverdraftError(LedgerError):
    """A transfer would make an account flagged ``debits_must_not_exceed_credits`` spend more than it holds.

    ``record`` is the account; ``available`` what it could still spend and ``needed`` the transfer's amount.
    """

    code = "overdraft"

    def __init__(self, message: str, *, record: str, transfer_id: str, available: int, needed: int) -> None:
        super().__init__(message, record=record, field="debits", transfer_id=transfer_id)
        self.available = available
        self.needed = needed


class CreditCeilingError(LedgerError):
    """A transfer would credit an account flagged ``credits_must_not_exceed_debits`` beyond its debits."""

    code = "credit_ceiling"


class TransferExistsError(LedgerError, ConflictError):
    """A transfer id was used before with another body; ``field`` is the first field that differs."""

    code = "transfer_exists"


class AccountExistsError(LedgerError, ConflictError):
    """An account id was created before with another currency, kind or flags."""

    code = "account_exists"


class UnknownAccountError(LedgerError, NotFoundError):
    """A transfer names an account that was never created."""

    code = "unknown_account"


class AmountOverflowError(LedgerError, ValidationError):
    """An amount, or the running total it would make, does not fit the 64-bit minor units the ledger keeps."""

    code = "amount_too_large"


class AccountCurrencyError(LedgerError):
    """A transfer's currency differs from the currency of one of its accounts."""

    code = "account_currency"


class InvalidTransferError(LedgerError, ValidationError):
    """A transfer breaks a rule of form: same account on both sides, amount below one, missing field."""

    code = "invalid_transfer"


class PendingTransferNotFoundError(LedgerError, NotFoundError):
    """A post or void names a pending transfer that does not exist (or is not pending)."""

    code = "pending_not_found"


class PendingTransferResolvedError(LedgerError, ConflictError):
    """A post or void names a pending transfer that was already posted or voided."""

    code = "pending_resolved"


class PendingTransferExpiredError(LedgerError):
    """A post names a pending transfer whose timeout has passed; its reservation is void."""

    code = "pending_expired"


class PostExceedsPendingError(LedgerError):
    """A post asks for more than its pending transfer reserved."""

    code = "post_exceeds_pending"


class LinkedTransferFailedError(LedgerError):
    """This transfer was valid but another transfer of its linked chain failed, so none of them applied."""

    code = "linked_transfer_failed"


class UnbalancedLedgerError(LedgerError):
    """The database refused a batch because some currency's balances no longer sum to zero."""

    code = "unbalanced"


class ReservationNotFoundError(LedgerError, NotFoundError):
    """A funded or rolled-back bid has no reservation in the ledger (yet: its ``OfferMatched`` may still be on
    its way, so a handler lets the event be delivered again)."""

    code = "reservation_not_found"


class InsufficientCashError(LedgerError, ConflictError):
    """A withdrawal asks for more than the investor's available cash (``record`` the investor, ``field``
    ``amount``); ``available`` and ``needed`` are minor units."""

    code = "insufficient_cash"

    def __init__(self, message: str, *, record: str, available: int, needed: int) -> None:
        super().__init__(message, record=record, field="amount")
        self.available = available
        self.needed = needed


class IdempotencyKeyReusedError(LedgerError, ConflictError):
    """An idempotency key already named another deposit or withdrawal (``record`` the key, ``field`` the first
    field that differs)."""

    code = "idempotency_key_reused"
