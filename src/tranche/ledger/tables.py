"""The ledger's tables.

Amounts are BIGINT minor units; instants are BIGINT microseconds since the epoch (UTC), which both backends
compare and index alike. The database checks what it can on its own:

* every transfer debits and credits two different accounts of the transfer's currency, by a positive amount,
  and a pending transfer is resolved at most once (unique ``pending_id``). SQLite checks the accounts with
  composite foreign keys to ``(id, currency)``; PostgreSQL with one statement trigger per insert that joins all
  the new transfers with the accounts at once (a foreign key would query once per transfer), and refuses to
  delete or rename an account;
* an account flagged ``debits_must_not_exceed_credits`` never has ``debits_pending + debits_posted`` above
  ``credits_posted`` (and the mirror rule), as CHECK constraints;
* per currency, the sum of all balances is zero: triggers on ``ledger_accounts`` (created by the migration)
  keep ``ledger_currency_totals`` up to date, and every batch ends by inserting its row into
  ``ledger_batches``, which a trigger refuses while any total is not zero. On PostgreSQL a deferred
  constraint trigger also checks the totals at commit, so even a stray ``UPDATE`` cannot commit unbalanced.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from tranche.store.schema import metadata

_SEQ = BigInteger().with_variant(Integer(), "sqlite")  # SQLite only auto-increments INTEGER PRIMARY KEY

ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("currency", String(3), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("debits_must_not_exceed_credits", Boolean(), nullable=False),
    Column("credits_must_not_exceed_debits", Boolean(), nullable=False),
    Column("owner_id", String(200)),
    Column("loan_id", String(200)),
    Column("portfolio_id", String(200)),
    Column("debits_pending", BigInteger(), nullable=False),
    Column("debits_posted", BigInteger(), nullable=False),
    Column("credits_pending", BigInteger(), nullable=False),
    Column("credits_posted", BigInteger(), nullable=False),
    Column("created_at", BigInteger(), nullable=False),
    UniqueConstraint("id", "currency", name="uq_ledger_accounts_id_currency"),
    CheckConstraint(
        "debits_pending >= 0 AND debits_posted >= 0 AND credits_pending >= 0 AND credits_posted >= 0",
        name="totals_not_negative",
    ),
    CheckConstraint(
        "NOT debits_must_not_exceed_credits OR debits_pending + debits_posted <= credits_posted",
        name="debits_within_credits",
    ),
    CheckConstraint(
        "NOT credits_must_not_exceed_debits OR credits_pending + credits_posted <= debits_posted",
        name="credits_within_debits",
    ),
)
Index("ix_ledger_accounts_owner_id", ledger_accounts.c.owner_id)
Index("ix_ledger_accounts_loan_id", ledger_accounts.c.loan_id)

ledger_transfers = Table(
    "ledger_transfers",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("id", String(200), nullable=False),
    Column("debit_account_id", String(200), nullable=False),
    Column("credit_account_id", String(200), nullable=False),
    Column("amount", BigInteger(), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("phase", String(8), nullable=False),
    Column("pending_id", String(200)),
    Column("code", String(32), nullable=False),
    Column("ref", String(200), nullable=False),
    Column("timeout_us", BigInteger(), nullable=False),
    Column("expires_at", BigInteger(), nullable=False),
    Column("created_at", BigInteger(), nullable=False),
    UniqueConstraint("id", name="uq_ledger_transfers_id"),
    UniqueConstraint("pending_id", name="uq_ledger_transfers_pending_id"),
    ForeignKeyConstraint(
        ["debit_account_id", "currency"],
        ["ledger_accounts.id", "ledger_accounts.currency"],
        name="fk_ledger_transfers_debit_account",
    ),
    ForeignKeyConstraint(
        ["credit_account_id", "currency"],
        ["ledger_accounts.id", "ledger_accounts.currency"],
        name="fk_ledger_transfers_credit_account",
    ),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("debit_account_id <> credit_account_id", name="two_accounts"),
    CheckConstraint("phase IN ('single', 'pending', 'post', 'void')", name="phase_known"),
)
Index("ix_ledger_transfers_debit_account_id", ledger_transfers.c.debit_account_id, ledger_transfers.c.seq)
Index("ix_ledger_transfers_credit_account_id", ledger_transfers.c.credit_account_id, ledger_transfers.c.seq)

# Pending transfers not yet posted or voided; a row leaves when its transfer is resolved. Keeps the sweep of
# expired reservations off the (large) transfers table.
ledger_open_pendings = Table(
    "ledger_open_pendings",
    metadata,
    Column("transfer_id", String(200), primary_key=True),
    Column("expires_at", BigInteger(), nullable=False),
)
Index("ix_ledger_open_pendings_expires_at", ledger_open_pendings.c.expires_at)

ledger_currency_totals = Table(
    "ledger_currency_totals",
    metadata,
    Column("currency", String(3), primary_key=True),
    Column("net_posted", BigInteger(), nullable=False),
    Column("net_pending", BigInteger(), nullable=False),
)

ledger_batches = Table(
    "ledger_batches",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("created_at", BigInteger(), nullable=False),
    Column("transfers", Integer(), nullable=False),
)

# One row per bid the ledger reserved cash for: who holds what of which loan, at which rates. A refused bid has
# no row.
ledger_holdings = Table(
    "ledger_holdings",
    metadata,
    Column("bid_id", String(200), primary_key=True),
    Column("account_id", String(200), nullable=False),
    Column("investor_id", String(200), nullable=False),
    Column("portfolio_id", String(200), nullable=False),
    Column("lender_id", String(200), nullable=False),
    Column("loan_id", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger(), nullable=False),
    Column("investor_rate", String(40), nullable=False),  # Decimal as text: exact on both backends
    Column("lender_rate", String(40), nullable=False),
    Column("status", String(16), nullable=False),
    Column("updated_at", BigInteger(), nullable=False),
    Column("written_off", BigInteger(), nullable=False, server_default="0"),  # principal lost to a write-off
)
Index("ix_ledger_holdings_loan", ledger_holdings.c.lender_id, ledger_holdings.c.loan_id)
Index("ix_ledger_holdings_investor_id", ledger_holdings.c.investor_id)
Index("ix_ledger_holdings_portfolio_id", ledger_holdings.c.portfolio_id)

# The ledger's view of each loan it settled: status and the last tape version whose payments it distributed.
ledger_loans = Table(
    "ledger_loans",
    metadata,
    Column("lender_id", String(200), primary_key=True),
    Column("loan_id", String(200), primary_key=True),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("outstanding_principal", BigInteger()),  # unknown until the first tape after funding
    Column("settled_version", Integer(), nullable=False),
    Column("updated_at", BigInteger(), nullable=False),
)

# Portfolios whose holdings settlement changed, waiting for their notification (PortfolioDrifted) until the window
# opened by their first change has passed; and the loans that moved.
ledger_drift = Table(
    "ledger_drift",
    metadata,
    Column("portfolio_id", String(200), primary_key=True),
    Column("investor_id", String(200), nullable=False),
    Column("changes", Integer(), nullable=False),
    Column("first_at", BigInteger(), nullable=False),
    Column("last_at", BigInteger(), nullable=False),
)
Index("ix_ledger_drift_first_at", ledger_drift.c.first_at)

ledger_drift_loans = Table(
    "ledger_drift_loans",
    metadata,
    Column("portfolio_id", String(200), primary_key=True),
    Column("loan_id", String(200), primary_key=True),
)
