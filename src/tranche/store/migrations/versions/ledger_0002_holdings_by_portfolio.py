"""ledger: what each holding lost to write-offs, holdings by portfolio, and pending drift notifications

Revision ID: ledger_0002
Revises: ledger_0001

Trading shows a portfolio's holdings from the ledger at every read, so they are indexed by portfolio. Bids the
ledger refused are no longer recorded (a refusal leaves nothing behind): rows of that status go. The drift
notifications a portfolio waits for are kept in the store, so that a restart loses none and any ledger process
may publish them.
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

    op.create_table(
        "ledger_drift",
        sa.Column("portfolio_id", sa.String(200), primary_key=True),
        sa.Column("investor_id", sa.String(200), nullable=False),
        sa.Column("changes", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.BigInteger(), nullable=False),
        sa.Column("last_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_ledger_drift_first_at", "ledger_drift", ["first_at"])
    op.create_table(
        "ledger_drift_loans",
        sa.Column("portfolio_id", sa.String(200), primary_key=True),
        sa.Column("loan_id", sa.String(200), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("ledger_drift_loans")
    op.drop_table("ledger_drift")
    op.drop_index("ix_ledger_holdings_portfolio_id", "ledger_holdings")
    with op.batch_alter_table("ledger_holdings") as batch:
        batch.drop_column("written_off")
