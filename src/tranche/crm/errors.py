"""CRM's errors."""

from __future__ import annotations

from tranche.shared.errors import NotFoundError, TrancheError


class CrmError(TrancheError):
    """Base of the errors about clients and their configuration."""


class UnknownLenderError(NotFoundError, CrmError):
    """No lender is registered under this id: it cannot upload tapes or be configured."""

    code = "unknown_lender"


class UnknownInvestorError(NotFoundError, CrmError):
    """No investor is registered under this id: it has no cash, portfolios or statements."""

    code = "unknown_investor"
