"""intake: batches, their runs and results, errors, append-only loan versions

Revision ID: intake_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "intake_0001"
down_revision = None
branch_labels = ("intake",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "intake_batches",
        sa.Column("batch_id", sa.String(40), primary_key=True),
        sa.Column("lender_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("archive_key", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("lender_id", "sequence", name="uq_intake_batches_lender_sequence"),
        sa.UniqueConstraint("lender_id", "sha256", name="uq_intake_batches_lender_sha256"),
    )
    op.create_table(
        "intake_batch_runs",
        sa.Column("batch_id", sa.String(40), sa.ForeignKey("intake_batches.batch_id"), primary_key=True),
        sa.Column("run", sa.Integer, primary_key=True),
        sa.Column("wiped", sa.Boolean, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "intake_batch_reads",
        sa.Column("batch_id", sa.String(40), primary_key=True),
        sa.Column("run", sa.Integer, primary_key=True),
        sa.Column("documents", sa.Integer, nullable=False),
        sa.Column("slices", sa.Integer, nullable=False),
        sa.Column("damaged", sa.Boolean, nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "intake_slice_results",
        sa.Column("batch_id", sa.String(40), primary_key=True),
        sa.Column("run", sa.Integer, primary_key=True),
        sa.Column("slice", sa.Integer, primary_key=True),
        sa.Column("read", sa.Integer, nullable=False),
        sa.Column("new", sa.Integer, nullable=False),
        sa.Column("changed", sa.Integer, nullable=False),
        sa.Column("unchanged", sa.Integer, nullable=False),
        sa.Column("withdrawn", sa.Integer, nullable=False),
        sa.Column("invalid", sa.Integer, nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "intake_batch_errors",
        sa.Column("error_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.String(40), nullable=False),
        sa.Column("run", sa.Integer, nullable=False),
        sa.Column("document", sa.Integer, nullable=False),
        sa.Column("loan_id", sa.String(128)),
        sa.Column("field", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("stage", sa.String(40), nullable=False),
    )
    op.create_index("ix_intake_batch_errors_batch", "intake_batch_errors", ["batch_id", "run", "document"])
    op.create_table(
        "loan_versions",
        sa.Column("lender_id", sa.String(64), primary_key=True),
        sa.Column("loan_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("batch_id", sa.String(40), nullable=False),
        sa.Column("batch_sequence", sa.Integer, nullable=False),
        sa.Column("run", sa.Integer, nullable=False),
        sa.Column("document", sa.Integer, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("principal", sa.BigInteger, nullable=False),
        sa.Column("outstanding_principal", sa.BigInteger, nullable=False),
        sa.Column("interest_rate", sa.String(40), nullable=False),
        sa.Column("term_months", sa.Integer, nullable=False),
        sa.Column("schedule_type", sa.String(8), nullable=False),
        sa.Column("issue_date", sa.Date, nullable=False),
        sa.Column("next_payment_date", sa.Date),
        sa.Column("all_or_nothing", sa.Boolean, nullable=False),
        sa.Column("borrower_country", sa.String(2), nullable=False),
        sa.Column("borrower_age", sa.Integer, nullable=False),
        sa.Column("borrower_income_monthly", sa.BigInteger, nullable=False),
        sa.Column("borrower_credit_score", sa.Integer, nullable=False),
        sa.Column("raw_hash", sa.LargeBinary(16), nullable=False),
        sa.Column("content_hash", sa.LargeBinary(16), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_loan_versions_batch", "loan_versions", ["batch_id", "run"])


def downgrade() -> None:
    for table in (
        "loan_versions",
        "intake_batch_errors",
        "intake_slice_results",
        "intake_batch_reads",
        "intake_batch_runs",
        "intake_batches",
    ):
        op.drop_table(table)
