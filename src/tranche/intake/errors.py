"""Intake's errors."""

from __future__ import annotations

from tranche.shared.errors import ConflictError, NotFoundError, TrancheError, ValidationError


class IntakeError(TrancheError):
    """Base of the errors about tapes, batches and loan versions."""


class UnknownBatchError(NotFoundError, IntakeError):
    """No batch has this id."""

    code = "unknown_batch"


class UnknownLoanError(NotFoundError, IntakeError):
    """The lender has sent no loan with this id (or none as of the time asked)."""

    code = "unknown_loan"


class UnsupportedTapeFormatError(ValidationError, IntakeError):
    """The upload's content type is neither BSON nor JSON Lines."""

    code = "unsupported_format"


class EmptyTapeError(ValidationError, IntakeError):
    """The upload has no bytes."""

    code = "empty_tape"


class ArchiveMissingError(ConflictError, IntakeError):
    """A batch's archived tape is gone, so it cannot be processed or replayed."""

    code = "archive_missing"
