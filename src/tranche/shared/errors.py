"""The root of tranche's error tree.

Every error tranche raises on purpose descends from :class:`TrancheError`::

    TrancheError
    ├── ValidationError          input that breaks a rule; names the record and the field
    ├── NotFoundError            an id that names nothing
    ├── ConflictError            a request that contradicts what is already stored
    ├── CurrencyMismatchError    arithmetic across two currencies
    └── one base per bounded context (IntakeError, LedgerError, ...) with leaves named for the rule

Adapters translate driver errors into this tree; only the API maps them to HTTP statuses.
"""

from __future__ import annotations

from typing import Any


class TrancheError(Exception):
    """Base of every error tranche raises on purpose.

    ``record`` names the thing at fault (a loan id, a batch id, a transfer id) and ``field`` the attribute
    of it, so that a person reading the message knows where to look.
    """

    code = "error"

    def __init__(self, message: str, *, record: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.record = record
        self.field = field

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.record is not None:
            body["record"] = self.record
        if self.field is not None:
            body["field"] = self.field
        return body


class ValidationError(TrancheError):
    """Input breaks a rule: a missing field, a wrong type, a value out of range."""

    code = "invalid"


class NotFoundError(TrancheError):
    """An id names nothing that is stored."""

    code = "not_found"


class ConflictError(TrancheError):
    """A request contradicts what is already stored (a reused idempotency key with another body, ...)."""

    code = "conflict"


class CurrencyMismatchError(TrancheError):
    """Arithmetic or comparison across two currencies."""

    code = "currency_mismatch"
