"""Intake's tables. Loan versions are append-only: a row is written once and never updated."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from tranche.store.schema import metadata

batches = Table(
    "intake_batches",
    metadata,
    Column("batch_id", String(40), primary_key=True),
    Column("lender_id", String(64), nullable=False),
    Column("sequence", Integer, nullable=False),  # upload order within the lender, from 1
    Column("format", String(8), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("archive_key", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("lender_id", "sequence", name="uq_intake_batches_lender_sequence"),
    UniqueConstraint("lender_id", "sha256", name="uq_intake_batches_lender_sha256"),
)

# One row per processing of a batch: run 1 at upload, one more per replay.
batch_runs = Table(
    "intake_batch_runs",
    metadata,
    Column("batch_id", String(40), ForeignKey("intake_batches.batch_id"), primary_key=True),
    Column("run", Integer, primary_key=True),
    Column("wiped", Boolean, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
)

# Written once when the read stage has split the tape into slices.
batch_reads = Table(
    "intake_batch_reads",
    metadata,
    Column("batch_id", String(40), primary_key=True),
    Column("run", Integer, primary_key=True),
    Column("documents", Integer, nullable=False),
    Column("slices", Integer, nullable=False),
    Column("damaged", Boolean, nullable=False),
    Column("read_at", DateTime(timezone=True), nullable=False),
)

# Written once per slice, in the transaction that stores the slice's loan versions.
slice_results = Table(
    "intake_slice_results",
    metadata,
    Column("batch_id", String(40), primary_key=True),
    Column("run", Integer, primary_key=True),
    Column("slice", Integer, primary_key=True),
    Column("read", Integer, nullable=False),
    Column("new", Integer, nullable=False),
    Column("changed", Integer, nullable=False),
    Column("unchanged", Integer, nullable=False),
    Column("withdrawn", Integer, nullable=False),
    Column("invalid", Integer, nullable=False),
    Column("done_at", DateTime(timezone=True), nullable=False),
)

batch_errors = Table(
    "intake_batch_errors",
    metadata,
    Column("error_id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", String(40), nullable=False),
    Column("run", Integer, nullable=False),
    Column("document", Integer, nullable=False),  # position of the document in the tape, from 0
    Column("loan_id", String(128)),
    Column("field", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    Column("stage", String(40), nullable=False),
    Index("ix_intake_batch_errors_batch", "batch_id", "run", "document"),
)

loan_versions = Table(
    "loan_versions",
    metadata,
    Column("lender_id", String(64), primary_key=True),
    Column("loan_id", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("batch_id", String(40), nullable=False),
    Column("batch_sequence", Integer, nullable=False),
    Column("run", Integer, nullable=False),
    Column("document", Integer, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("principal", BigInteger, nullable=False),  # minor units
    Column("outstanding_principal", BigInteger, nullable=False),
    Column("interest_rate", String(40), nullable=False),  # Decimal as text: exact on every backend
    Column("term_months", Integer, nullable=False),
    Column("schedule_type", String(8), nullable=False),
    Column("issue_date", Date, nullable=False),
    Column("next_payment_date", Date),
    Column("all_or_nothing", Boolean, nullable=False),
    Column("borrower_country", String(2), nullable=False),
    Column("borrower_age", Integer, nullable=False),
    Column("borrower_income_monthly", BigInteger, nullable=False),
    Column("borrower_credit_score", Integer, nullable=False),
    Column("raw_hash", LargeBinary(16), nullable=False),
    Column("content_hash", LargeBinary(16), nullable=False),
    Column("format", String(8), nullable=False),
    Column("body", LargeBinary, nullable=False),  # the document exactly as the lender sent it
    Index("ix_loan_versions_batch", "batch_id", "run"),
    # Covers the diff's look-up of each loan's latest version, which then never reads the (wide) rows.
    Index(
        "ix_loan_versions_head",
        "lender_id",
        "loan_id",
        "version",
        "raw_hash",
        "content_hash",
        "status",
        "batch_sequence",
    ),
)

# Written once per slice by the assess stage, in the transaction that records its assessments.
assess_results = Table(
    "intake_assess_results",
    metadata,
    Column("batch_id", String(40), primary_key=True),
    Column("run", Integer, primary_key=True),
    Column("slice", Integer, primary_key=True),
    Column("assessed", Integer, nullable=False),
    Column("refused", Integer, nullable=False),
    Column("done_at", DateTime(timezone=True), nullable=False),
)
