"""matching: durable sell offers, buy offers and bids

Revision ID: matching_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "matching_0001"
down_revision = None
branch_labels = ("matching",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "matching_sell_offers",
        sa.Column("offer_id", sa.String(200), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("lender_id", sa.String(64), nullable=False),
        sa.Column("loan_id", sa.String(128), nullable=False),
        sa.Column("loan_version", sa.Integer, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("lender_rate", sa.String(32), nullable=False),
        sa.Column("margin", sa.String(32), nullable=False),
        sa.Column("all_or_nothing", sa.Boolean, nullable=False),
        sa.Column("product", sa.String(64), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("borrower_age", sa.Integer, nullable=False),
        sa.Column("credit_score", sa.Integer, nullable=False),
        sa.Column("income_monthly", sa.BigInteger, nullable=False),
        sa.Column("risk_group", sa.String(16), nullable=False),
        sa.Column("term_months", sa.Integer, nullable=False),
    )
    op.create_index("ix_matching_sell_offers_status_seq", "matching_sell_offers", ["status", "seq"])
    op.create_table(
        "matching_buy_offers",
        sa.Column("buy_offer_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("portfolio_id", sa.String(64), nullable=False),
        sa.Column("investor_id", sa.String(64), nullable=False),
        sa.Column("bucket_id", sa.String(64), nullable=False),
        sa.Column("cycle", sa.Integer, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("min_ticket", sa.BigInteger, nullable=False),
        sa.Column("per_loan_cap", sa.BigInteger, nullable=False),
        sa.Column("criteria", sa.Text, nullable=False),
    )
    op.create_index("ix_matching_buy_offers_status_seq", "matching_buy_offers", ["status", "seq"])
    op.create_table(
        "matching_bids",
        sa.Column("bid_id", sa.String(220), primary_key=True),
        sa.Column("match_id", sa.String(220), nullable=False),
        sa.Column(
            "sell_offer_id",
            sa.String(200),
            sa.ForeignKey(
                "matching_sell_offers.offer_id",
                name="fk_matching_bids_sell_offer_id_matching_sell_offers",
            ),
            nullable=False,
        ),
        sa.Column(
            "buy_offer_id",
            sa.String(64),
            sa.ForeignKey(
                "matching_buy_offers.buy_offer_id",
                name="fk_matching_bids_buy_offer_id_matching_buy_offers",
            ),
            nullable=False,
        ),
        sa.Column("portfolio_id", sa.String(64), nullable=False),
        sa.Column("investor_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("investor_rate", sa.String(32), nullable=False),
        sa.Column("lender_rate", sa.String(32), nullable=False),
        sa.Column("margin", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_index("ix_matching_bids_sell_offer_id", "matching_bids", ["sell_offer_id"])
    op.create_index("ix_matching_bids_buy_offer_id", "matching_bids", ["buy_offer_id"])


def downgrade() -> None:
    op.drop_table("matching_bids")
    op.drop_table("matching_buy_offers")
    op.drop_table("matching_sell_offers")
