"""intake: per-slice results of the assess stage

Revision ID: intake_0002
Revises: intake_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "intake_0002"
down_revision = "intake_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "intake_assess_results",
        sa.Column("batch_id", sa.String(40), primary_key=True),
        sa.Column("run", sa.Integer, primary_key=True),
        sa.Column("slice", sa.Integer, primary_key=True),
        sa.Column("assessed", sa.Integer, nullable=False),
        sa.Column("refused", sa.Integer, nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("intake_assess_results")
