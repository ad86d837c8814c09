"""store: the owner and fencing epoch of each singleton job

Revision ID: store_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "store_0001"
down_revision = None
branch_labels = ("store",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_owners",
        sa.Column("job", sa.String(128), primary_key=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("backend_pid", sa.Integer(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("job_owners")
