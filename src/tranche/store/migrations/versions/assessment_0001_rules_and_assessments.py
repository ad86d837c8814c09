"""assessment: versioned risk rules and append-only loan assessments

Revision ID: assessment_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "assessment_0001"
down_revision = None
branch_labels = ("assessment",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assessment_risk_rules",
        sa.Column("lender_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("rules", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "loan_assessments",
        sa.Column(
            "assessment_id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("lender_id", sa.String(64), nullable=False),
        sa.Column("loan_id", sa.String(128), nullable=False),
        sa.Column("loan_version", sa.Integer, nullable=False),
        sa.Column("rule_version", sa.Integer, nullable=False),
        sa.Column("risk_group", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("schedule_type", sa.String(16), nullable=False),
        sa.Column("periods", sa.Integer, nullable=False),
        sa.Column("total_principal", sa.BigInteger, nullable=False),
        sa.Column("total_interest", sa.BigInteger, nullable=False),
        sa.Column("next_payment_amount", sa.BigInteger, nullable=False),
        sa.Column("next_payment_date", sa.Date, nullable=True),
        sa.Column("maturity_date", sa.Date, nullable=True),
        sa.Column("schedule", sa.Text, nullable=True),
        sa.Column("assessed_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "lender_id",
            "loan_id",
            "loan_version",
            "rule_version",
            name="uq_loan_assessments_loan_version_rules",
        ),
    )
    op.create_index(
        "ix_loan_assessments_lender_loan", "loan_assessments", ["lender_id", "loan_id", "assessment_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_loan_assessments_lender_loan", table_name="loan_assessments")
    op.drop_table("loan_assessments")
    op.drop_table("assessment_risk_rules")
