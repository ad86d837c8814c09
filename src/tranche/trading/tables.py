"""Trading's tables: portfolios, the buy offers each cycle issued, and what they bought."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Index, Integer, String, Table, Text

from tranche.store.schema import metadata

portfolios = Table(
    "trading_portfolios",
    metadata,
    Column("portfolio_id", String(64), primary_key=True),
    Column("investor_id", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("max_per_loan", BigInteger, nullable=False),
    Column("min_ticket", BigInteger, nullable=False),
    Column("tranche_percent", String(16), nullable=False),
    Column("tolerance_percent", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("cycle", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("buckets", Text, nullable=False),  # JSON list of buckets with their criteria
    Column("keep_uninvested", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_trading_portfolios_investor_id", "investor_id"),
)

# Each buy offer a cycle of the gap analyzer issued: traceable to its portfolio (and version) and cycle.
buy_offers = Table(
    "trading_buy_offers",
    metadata,
    Column("buy_offer_id", String(64), primary_key=True),
    Column("portfolio_id", String(64), ForeignKey("trading_portfolios.portfolio_id"), nullable=False),
    Column("portfolio_version", Integer, nullable=False),
    Column("bucket_id", String(64), nullable=False),
    Column("cycle", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # open | withdrawn
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_trading_buy_offers_portfolio_id", "portfolio_id", "status"),
)

# What each buy offer bought, one row per bid of the matcher.
fills = Table(
    "trading_fills",
    metadata,
    Column("bid_id", String(220), primary_key=True),
    Column("buy_offer_id", String(64), ForeignKey("trading_buy_offers.buy_offer_id"), nullable=False),
    Column("portfolio_id", String(64), nullable=False),
    Column("bucket_id", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # placed | confirmed | rolled_back
    Index("ix_trading_fills_portfolio_id", "portfolio_id"),
)
