"""trading: cash a portfolio keeps uninvested

Revision ID: trading_0002
Revises: trading_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "trading_0002"
down_revision = "trading_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trading_portfolios") as batch:
        batch.add_column(sa.Column("keep_uninvested", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("trading_portfolios") as batch:
        batch.drop_column("keep_uninvested")
