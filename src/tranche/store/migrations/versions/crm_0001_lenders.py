"""crm: lenders and their versioned configuration

Revision ID: crm_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "crm_0001"
down_revision = None
branch_labels = ("crm",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crm_lenders",
        sa.Column("lender_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "crm_lender_config",
        sa.Column("lender_id", sa.String(64), sa.ForeignKey("crm_lenders.lender_id"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("crm_lender_config")
    op.drop_table("crm_lenders")
