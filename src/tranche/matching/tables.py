"""Matching's tables: the durable offers and bids the books are rebuilt from.

Rates are stored as decimal strings: exact on every backend.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, ForeignKey, Index, Integer, String, Table, Text

from tranche.store.schema import metadata

sell_offers = Table(
    "matching_sell_offers",
    metadata,
    Column("offer_id", String(200), primary_key=True),
    Column("seq", BigInteger, nullable=False),  # arrival order in the books
    Column("status", String(16), nullable=False),  # open | withdrawn | finished
    Column("currency", String(3), nullable=False),
    Column("lender_id", String(64), nullable=False),
    Column("loan_id", String(128), nullable=False),
    Column("loan_version", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("lender_rate", String(32), nullable=False),
    Column("margin", String(32), nullable=False),
    Column("all_or_nothing", Boolean, nullable=False),
    Column("product", String(64), nullable=False),
    Column("country", String(2), nullable=False),
    Column("borrower_age", Integer, nullable=False),
    Column("credit_score", Integer, nullable=False),
    Column("income_monthly", BigInteger, nullable=False),
    Column("risk_group", String(16), nullable=False),
    Column("term_months", Integer, nullable=False),
    Index("ix_matching_sell_offers_status_seq", "status", "seq"),
)

buy_offers = Table(
    "matching_buy_offers",
    metadata,
    Column("buy_offer_id", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # open | withdrawn | finished
    Column("currency", String(3), nullable=False),
    Column("portfolio_id", String(64), nullable=False),
    Column("investor_id", String(64), nullable=False),
    Column("bucket_id", String(64), nullable=False),
    Column("cycle", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("min_ticket", BigInteger, nullable=False),
    Column("per_loan_cap", BigInteger, nullable=False),
    Column("criteria", Text, nullable=False),  # Criteria.to_dict() as JSON
    Index("ix_matching_buy_offers_status_seq", "status", "seq"),
)

bids = Table(
    "matching_bids",
    metadata,
    Column("bid_id", String(220), primary_key=True),
    Column("match_id", String(220), nullable=False),
    Column("sell_offer_id", String(200), ForeignKey("matching_sell_offers.offer_id"), nullable=False),
    Column("buy_offer_id", String(64), ForeignKey("matching_buy_offers.buy_offer_id"), nullable=False),
    Column("portfolio_id", String(64), nullable=False),
    Column("investor_id", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("investor_rate", String(32), nullable=False),
    Column("lender_rate", String(32), nullable=False),
    Column("margin", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # placed | confirmed | rolled_back
    Index("ix_matching_bids_sell_offer_id", "sell_offer_id"),
    Index("ix_matching_bids_buy_offer_id", "buy_offer_id"),
)

# Loan versions the market could not offer, each with the field at fault and why (for the lender and operators).
refused_offers = Table(
    "matching_refused_offers",
    metadata,
    Column("lender_id", String(64), primary_key=True),
    Column("loan_id", String(128), primary_key=True),
    Column("loan_version", Integer, primary_key=True),
    Column("batch_id", String(64), nullable=False),
    Column("field", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("refused_at", DateTime(timezone=True), nullable=False),
)
