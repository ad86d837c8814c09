"""bus: the outbox of events to publish and the inbox of events each consumer has handled

Revision ID: bus_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "bus_0001"
down_revision = None
branch_labels = ("bus",)
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "bus_outbox",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("event_id", name="uq_bus_outbox_event_id"),
    )
    op.create_index("ix_bus_outbox_published_at", "bus_outbox", ["published_at", "seq"])
    op.create_table(
        "bus_inbox",
        sa.Column("consumer", sa.String(128), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("bus_inbox")
    op.drop_index("ix_bus_outbox_published_at", table_name="bus_outbox")
    op.drop_table("bus_outbox")
