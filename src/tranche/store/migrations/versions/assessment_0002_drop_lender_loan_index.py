"""assessment: drop the (lender, loan, id) index, which the unique (lender, loan, version, rules) index covers

Every look-up of a loan's assessments names the lender and the loan, which the unique index leads with; the
newest of them (the highest id) is found among the few rows of one loan. The second index only cost every
insert an extra index write.

Revision ID: assessment_0002
Revises: assessment_0001
"""

from alembic import op

revision = "assessment_0002"
down_revision = "assessment_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_loan_assessments_lender_loan", table_name="loan_assessments")


def downgrade() -> None:
    op.create_index(
        "ix_loan_assessments_lender_loan", "loan_assessments", ["lender_id", "loan_id", "assessment_id"]
    )
