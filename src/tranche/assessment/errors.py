"""Errors of the assessment context.

::

    TrancheError
    └── AssessmentError
        ├── LoanError                 one loan cannot be projected; returned in its place, not raised
        ├── InvalidRiskRulesError     a risk rule set breaks the rule language; names the field
        ├── RiskRulesConflictError    two writers raced for the same rule version
        └── CashflowServiceError      the external cash-flow service failed a call
            ├── RetryableServiceError 429 (with Retry-After), 5xx, timeout, connection refused
            └── TerminalServiceError  other 4xx, a malformed answer: retrying cannot help
"""

from __future__ import annotations

from tranche.shared.errors import TrancheError


class AssessmentError(TrancheError):
    """Base of every error the assessment context raises on purpose."""

    code = "assessment_error"


class LoanError(AssessmentError):
    """One loan cannot be projected (a negative rate, no next payment date, a rejection by the service).

    ``project_many`` returns it in the loan's place so that its neighbours in the slice go on; it is terminal
    for that loan: retrying the same version gives the same answer.
    """

    code = "loan_not_projectable"

    def __init__(self, message: str, *, lender_id: str, loan_id: str, field: str | None = None) -> None:
        super().__init__(message, record=f"{lender_id}/{loan_id}", field=field)
        self.lender_id = lender_id
        self.loan_id = loan_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LoanError):
            return NotImplemented
        return (self.lender_id, self.loan_id, self.message, self.field) == (
            other.lender_id,
            other.loan_id,
            other.message,
            other.field,
        )

    def __hash__(self) -> int:
        return hash((self.lender_id, self.loan_id, self.message, self.field))

    def __repr__(self) -> str:
        return f"LoanError({self.message!r}, lender_id={self.lender_id!r}, loan_id={self.loan_id!r}, field={self.field!r})"


class InvalidRiskRulesError(AssessmentError):
    """A risk rule set does not follow the rule language; ``field`` is the path to the offending part
    (``rules[1].all[0].op``)."""

    code = "invalid_risk_rules"


class RiskRulesConflictError(AssessmentError):
    """Another writer stored the same version of a lender's risk rules first; read the latest and retry."""

    code = "risk_rules_conflict"


class CashflowServiceError(AssessmentError):
    """The external cash-flow service did not answer a call usefully."""

    code = "cashflow_service_error"


class RetryableServiceError(CashflowServiceError):
    """A failure that may pass if the call is made again later: 429, 5xx, a timeout, a refused connection.

    ``retry_after`` is the delay in seconds the service asked for (``Retry-After``), or None.
    """

    code = "cashflow_service_unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class TerminalServiceError(CashflowServiceError):
    """A failure that the same call will meet again: a 4xx other than 429, or an answer that breaks the
    protocol."""

    code = "cashflow_service_rejected"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
