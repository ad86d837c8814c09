"""pipeline: stage queue of work items and the append-only trace of their transitions

Revision ID: pipeline_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "pipeline_0001"
down_revision = None
branch_labels = ("pipeline",)
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "pipeline_items",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(128), nullable=False),
        sa.Column("partition", sa.String(128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_token", sa.String(32), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("trace_key", sa.String(128), nullable=True),
        sa.Column("parent_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_pipeline_items_claim", "pipeline_items", ["pipeline", "stage", "status", "next_run_at"]
    )
    op.create_index(
        "ix_pipeline_items_order", "pipeline_items", ["pipeline", "partition", "status", "sequence"]
    )
    op.create_index("ix_pipeline_items_trace_key", "pipeline_items", ["trace_key"])

    op.create_table(
        "pipeline_trace",
        sa.Column("id", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.String(40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stage", sa.String(128), nullable=False),
        sa.Column("event", sa.String(24), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_pipeline_trace_item_id", "pipeline_trace", ["item_id"])
    op.create_index("ix_pipeline_trace_at", "pipeline_trace", ["at"])


def downgrade() -> None:
    op.drop_index("ix_pipeline_trace_at", table_name="pipeline_trace")
    op.drop_index("ix_pipeline_trace_item_id", table_name="pipeline_trace")
    op.drop_table("pipeline_trace")
    op.drop_index("ix_pipeline_items_trace_key", table_name="pipeline_items")
    op.drop_index("ix_pipeline_items_order", table_name="pipeline_items")
    op.drop_index("ix_pipeline_items_claim", table_name="pipeline_items")
    op.drop_table("pipeline_items")
