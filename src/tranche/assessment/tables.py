"""Assessment's tables. Both are append-only: a row is written once and never updated."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from tranche.store.schema import metadata

# Versioned risk rules per lender: a new version is a new row; the highest version applies.
risk_rules = Table(
    "assessment_risk_rules",
    metadata,
    Column("lender_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),  # from 1; version 0 is the built-in default, never stored
    Column("rules", Text, nullable=False),  # RiskRules as JSON
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# One row per assessment of a loan version under a rule version; the highest id per loan is the latest.
loan_assessments = Table(
    "loan_assessments",
    metadata,
    Column(
        "assessment_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("lender_id", String(64), nullable=False),
    Column("loan_id", String(128), nullable=False),
    Column("loan_version", Integer, nullable=False),
    Column("rule_version", Integer, nullable=False),
    Column("risk_group", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("schedule_type", String(16), nullable=False),
    Column("periods", Integer, nullable=False),
    Column("total_principal", BigInteger, nullable=False),
    Column("total_interest", BigInteger, nullable=False),
    Column("next_payment_amount", BigInteger, nullable=False),
    Column("next_payment_date", Date, nullable=True),
    Column("maturity_date", Date, nullable=True),
    Column("schedule", Text, nullable=True),  # {"principal": [...], "interest": [...]}, compact JSON
    Column("assessed_at", DateTime(timezone=True), nullable=False),
    # Also the index of every look-up, which names the lender and the loan.
    UniqueConstraint(
        "lender_id", "loan_id", "loan_version", "rule_version", name="uq_loan_assessments_loan_version_rules"
    ),
)
