"""CRM: the platform's clients (lenders and investors) and what operators configure about them."""

from tranche.crm.errors import CrmError, UnknownInvestorError, UnknownLenderError
from tranche.crm.investors import ensure_investor, investor_name, register_investor
from tranche.crm.lenders import (
    LenderConfig,
    configure_lender,
    ensure_lender,
    lender_config_of,
    register_lender,
)

__all__ = [
    "CrmError",
    "LenderConfig",
    "UnknownInvestorError",
    "UnknownLenderError",
    "configure_lender",
    "ensure_investor",
    "ensure_lender",
    "investor_name",
    "lender_config_of",
    "register_investor",
    "register_lender",
]
