"""trading: portfolios, the buy offers of each cycle, and their fills

Revision ID: trading_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "trading_0001"
down_revision = None
branch_labels = ("trading",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trading_portfolios",
        sa.Column("portfolio_id", sa.String(64), primary_key=True),
        sa.Column("investor_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("max_per_loan", sa.BigInteger, nullable=False),
        sa.Column("min_ticket", sa.BigInteger, nullable=False),
        sa.Column("tranche_percent", sa.String(16), nullable=False),
        sa.Column("tolerance_percent", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cycle", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("buckets", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_trading_portfolios_investor_id", "trading_portfolios", ["investor_id"])
    op.create_table(
        "trading_buy_offers",
        sa.Column("buy_offer_id", sa.String(64), primary_key=True),
        sa.Column(
            "portfolio_id",
            sa.String(64),
            sa.ForeignKey(
                "trading_portfolios.portfolio_id",
                name="fk_trading_buy_offers_portfolio_id_trading_portfolios",
            ),
            nullable=False,
        ),
        sa.Column("portfolio_version", sa.Integer, nullable=False),
        sa.Column("bucket_id", sa.String(64), nullable=False),
        sa.Column("cycle", sa.Integer, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_trading_buy_offers_portfolio_id", "trading_buy_offers", ["portfolio_id", "status"])
    op.create_table(
        "trading_fills",
        sa.Column("bid_id", sa.String(220), primary_key=True),
        sa.Column(
            "buy_offer_id",
            sa.String(64),
            sa.ForeignKey(
                "trading_buy_offers.buy_offer_id", name="fk_trading_fills_buy_offer_id_trading_buy_offers"
            ),
            nullable=False,
        ),
        sa.Column("portfolio_id", sa.String(64), nullable=False),
        sa.Column("bucket_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_index("ix_trading_fills_portfolio_id", "trading_fills", ["portfolio_id"])


def downgrade() -> None:
    op.drop_table("trading_fills")
    op.drop_table("trading_buy_offers")
    op.drop_table("trading_portfolios")
