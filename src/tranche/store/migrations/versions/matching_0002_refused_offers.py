"""matching: loan versions the market refused to offer

Revision ID: matching_0002
Revises: matching_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "matching_0002"
down_revision = "matching_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "matching_refused_offers",
        sa.Column("lender_id", sa.String(64), primary_key=True),
        sa.Column("loan_id", sa.String(128), primary_key=True),
        sa.Column("loan_version", sa.Integer, primary_key=True),
        sa.Column("batch_id", sa.String(64), nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("refused_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("matching_refused_offers")
