"""ledger: what each holding lost to write-offs, and holdings by portfolio

Revision ID: ledger_0002
Revises: ledger_0001

Trading shows a portfolio's holdings from the ledger at every read, so they are indexed by portfolio. Bids the
ledger refused are no longer recorded (a refusal leaves nothing behind): rows of that status go.
"""

import sqlalchemy as sa
from alembic import op

revision = "ledger_0002"
down_revision = "ledger_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "ledger_holdings", sa.Column("written_off", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.create_index("ix_ledger_holdings_portfolio_id", "ledger_holdings", ["portfolio_id"])
    op.execute("DELETE FROM ledger_holdings WHERE status = 'refused'")
    # What earlier write-offs took, from the transfers that recorded them.
    op.execute(
        "UPDATE ledger_holdings SET written_off = (SELECT COALESCE(SUM(t.amount), 0) FROM ledger_transfers t "
        "WHERE t.debit_account_id = ledger_holdings.account_id AND t.code = 'write_off') "
        "WHERE status = 'written_off'"
    )


def downgrade() -> None:
    op.drop_index("ix_ledger_holdings_portfolio_id", "ledger_holdings")
    with op.batch_alter_table("ledger_holdings") as batch:
        batch.drop_column("written_off")
