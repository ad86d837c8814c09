"""intake: a covering index for the latest version of each loan

Revision ID: intake_0003
Revises: intake_0002
"""

from alembic import op

revision = "intake_0003"
down_revision = "intake_0002"
branch_labels = None
depends_on = None

COLUMNS = ["lender_id", "loan_id", "version", "raw_hash", "content_hash", "status", "batch_sequence"]


def upgrade() -> None:
    op.create_index("ix_loan_versions_head", "loan_versions", COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_loan_versions_head", table_name="loan_versions")
