"""ledger: accounts, transfers, balancing triggers, holdings and loans

Revision ID: ledger_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "ledger_0001"
down_revision = None
branch_labels = ("ledger",)
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_UNBALANCED = "ledger unbalanced: some currency's balances do not sum to zero"

_SQLITE_TRIGGERS = [
    """
    CREATE TRIGGER ledger_accounts_totals_insert AFTER INSERT ON ledger_accounts
    BEGIN
        INSERT INTO ledger_currency_totals (currency, net_posted, net_pending)
        VALUES (NEW.currency, NEW.credits_posted - NEW.debits_posted, NEW.credits_pending - NEW.debits_pending)
        ON CONFLICT (currency) DO UPDATE SET
            net_posted = net_posted + excluded.net_posted,
            net_pending = net_pending + excluded.net_pending;
    END
    """,
    """
    CREATE TRIGGER ledger_accounts_currency_fixed BEFORE UPDATE OF currency ON ledger_accounts
    WHEN NEW.currency <> OLD.currency
    BEGIN
        SELECT RAISE(ABORT, 'ledger account currency cannot change');
    END
    """,
    """
    CREATE TRIGGER ledger_accounts_totals_update
    AFTER UPDATE OF debits_pending, debits_posted, credits_pending, credits_posted ON ledger_accounts
    BEGIN
        UPDATE ledger_currency_totals SET
            net_posted = net_posted + (NEW.credits_posted - NEW.debits_posted)
                - (OLD.credits_posted - OLD.debits_posted),
            net_pending = net_pending + (NEW.credits_pending - NEW.debits_pending)
                - (OLD.credits_pending - OLD.debits_pending)
        WHERE currency = NEW.currency;
    END
    """,
    """
    CREATE TRIGGER ledger_accounts_totals_delete AFTER DELETE ON ledger_accounts
    BEGIN
        UPDATE ledger_currency_totals SET
            net_posted = net_posted - (OLD.credits_posted - OLD.debits_posted),
            net_pending = net_pending - (OLD.credits_pending - OLD.debits_pending)
        WHERE currency = OLD.currency;
    END
    """,
    f"""
    CREATE TRIGGER ledger_batches_balanced BEFORE INSERT ON ledger_batches
    WHEN EXISTS (SELECT 1 FROM ledger_currency_totals WHERE net_posted <> 0 OR net_pending <> 0)
    BEGIN
        SELECT RAISE(ABORT, '{_UNBALANCED.replace("'", "''")}');
    END
    """,
]

_POSTGRES_TRIGGERS = [
    """
    CREATE FUNCTION ledger_accounts_totals() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO ledger_currency_totals AS t (currency, net_posted, net_pending)
            SELECT currency, sum(credits_posted - debits_posted), sum(credits_pending - debits_pending)
            FROM new_rows GROUP BY currency
            ON CONFLICT (currency) DO UPDATE SET
                net_posted = t.net_posted + excluded.net_posted,
                net_pending = t.net_pending + excluded.net_pending;
        ELSIF TG_OP = 'UPDATE' THEN
            UPDATE ledger_currency_totals t SET
                net_posted = t.net_posted + d.np,
                net_pending = t.net_pending + d.npe
            FROM (
                SELECT currency, sum(np) AS np, sum(npe) AS npe FROM (
                    SELECT currency, credits_posted - debits_posted AS np,
                           credits_pending - debits_pending AS npe FROM new_rows
                    UNION ALL
                    SELECT currency, debits_posted - credits_posted, debits_pending - credits_pending
                    FROM old_rows
                ) AS changes GROUP BY currency
            ) AS d
            WHERE t.currency = d.currency AND (d.np <> 0 OR d.npe <> 0);
        ELSE
            UPDATE ledger_currency_totals t SET
                net_posted = t.net_posted - d.np,
                net_pending = t.net_pending - d.npe
            FROM (
                SELECT currency, sum(credits_posted - debits_posted) AS np,
                       sum(credits_pending - debits_pending) AS npe
                FROM old_rows GROUP BY currency
            ) AS d
            WHERE t.currency = d.currency;
        END IF;
        RETURN NULL;
    END
    $$
    """,
    # A row trigger on the currency column alone: it fires only for an UPDATE that sets the currency.
    """
    CREATE FUNCTION ledger_accounts_currency_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'ledger account currency cannot change' USING ERRCODE = '23514';
    END
    $$
    """,
    """
    CREATE TRIGGER ledger_accounts_currency_fixed BEFORE UPDATE OF currency ON ledger_accounts
    FOR EACH ROW WHEN (NEW.currency <> OLD.currency) EXECUTE FUNCTION ledger_accounts_currency_fixed()
    """,
    """
    CREATE TRIGGER ledger_accounts_totals_insert AFTER INSERT ON ledger_accounts
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger_accounts_totals()
    """,
    """
    CREATE TRIGGER ledger_accounts_totals_update AFTER UPDATE ON ledger_accounts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_accounts_totals()
    """,
    """
    CREATE TRIGGER ledger_accounts_totals_delete AFTER DELETE ON ledger_accounts
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger_accounts_totals()
    """,
    f"""
    CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM ledger_currency_totals WHERE net_posted <> 0 OR net_pending <> 0) THEN
            RAISE EXCEPTION '{_UNBALANCED.replace("'", "''")}' USING ERRCODE = '23514';
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER ledger_batches_balanced AFTER INSERT ON ledger_batches
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_balanced()
    """,
    # At commit, so that no transaction leaves a currency unbalanced even without writing a batch row.
    """
    CREATE CONSTRAINT TRIGGER ledger_totals_balanced AFTER INSERT OR UPDATE ON ledger_currency_totals
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced()
    """,
]


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("debits_must_not_exceed_credits", sa.Boolean(), nullable=False),
        sa.Column("credits_must_not_exceed_debits", sa.Boolean(), nullable=False),
        sa.Column("owner_id", sa.String(200)),
        sa.Column("loan_id", sa.String(200)),
        sa.Column("portfolio_id", sa.String(200)),
        sa.Column("debits_pending", sa.BigInteger(), nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), nullable=False),
        sa.Column("credits_pending", sa.BigInteger(), nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("id", "currency", name="uq_ledger_accounts_id_currency"),
        sa.CheckConstraint(
            "debits_pending >= 0 AND debits_posted >= 0 AND credits_pending >= 0 AND credits_posted >= 0",
            name=op.f("ck_ledger_accounts_totals_not_negative"),
        ),
        sa.CheckConstraint(
            "NOT debits_must_not_exceed_credits OR debits_pending + debits_posted <= credits_posted",
            name=op.f("ck_ledger_accounts_debits_within_credits"),
        ),
        sa.CheckConstraint(
            "NOT credits_must_not_exceed_debits OR credits_pending + credits_posted <= debits_posted",
            name=op.f("ck_ledger_accounts_credits_within_debits"),
        ),
    )
    op.create_index("ix_ledger_accounts_owner_id", "ledger_accounts", ["owner_id"])
    op.create_index("ix_ledger_accounts_loan_id", "ledger_accounts", ["loan_id"])

    op.create_table(
        "ledger_transfers",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("debit_account_id", sa.String(200), nullable=False),
        sa.Column("credit_account_id", sa.String(200), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("phase", sa.String(8), nullable=False),
        sa.Column("pending_id", sa.String(200)),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("ref", sa.String(200), nullable=False),
        sa.Column("timeout_us", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("id", name="uq_ledger_transfers_id"),
        sa.UniqueConstraint("pending_id", name="uq_ledger_transfers_pending_id"),
        sa.ForeignKeyConstraint(
            ["debit_account_id", "currency"],
            ["ledger_accounts.id", "ledger_accounts.currency"],
            name="fk_ledger_transfers_debit_account",
        ),
        sa.ForeignKeyConstraint(
            ["credit_account_id", "currency"],
            ["ledger_accounts.id", "ledger_accounts.currency"],
            name="fk_ledger_transfers_credit_account",
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_transfers_amount_positive")),
        sa.CheckConstraint(
            "debit_account_id <> credit_account_id", name=op.f("ck_ledger_transfers_two_accounts")
        ),
        sa.CheckConstraint(
            "phase IN ('single', 'pending', 'post', 'void')", name=op.f("ck_ledger_transfers_phase_known")
        ),
    )
    op.create_index("ix_ledger_transfers_debit_account_id", "ledger_transfers", ["debit_account_id", "seq"])
    op.create_index("ix_ledger_transfers_credit_account_id", "ledger_transfers", ["credit_account_id", "seq"])

    op.create_table(
        "ledger_open_pendings",
        sa.Column("transfer_id", sa.String(200), primary_key=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_ledger_open_pendings_expires_at", "ledger_open_pendings", ["expires_at"])

    op.create_table(
        "ledger_currency_totals",
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("net_posted", sa.BigInteger(), nullable=False),
        sa.Column("net_pending", sa.BigInteger(), nullable=False),
    )

    op.create_table(
        "ledger_batches",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("transfers", sa.Integer(), nullable=False),
    )

    op.create_table(
        "ledger_holdings",
        sa.Column("bid_id", sa.String(200), primary_key=True),
        sa.Column("account_id", sa.String(200), nullable=False),
        sa.Column("investor_id", sa.String(200), nullable=False),
        sa.Column("portfolio_id", sa.String(200), nullable=False),
        sa.Column("lender_id", sa.String(200), nullable=False),
        sa.Column("loan_id", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("investor_rate", sa.String(40), nullable=False),
        sa.Column("lender_rate", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_ledger_holdings_loan", "ledger_holdings", ["lender_id", "loan_id"])
    op.create_index("ix_ledger_holdings_investor_id", "ledger_holdings", ["investor_id"])

    op.create_table(
        "ledger_loans",
        sa.Column("lender_id", sa.String(200), primary_key=True),
        sa.Column("loan_id", sa.String(200), primary_key=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outstanding_principal", sa.BigInteger()),
        sa.Column("settled_version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
    )

    triggers = _SQLITE_TRIGGERS if op.get_bind().dialect.name == "sqlite" else _POSTGRES_TRIGGERS
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_totals_balanced ON ledger_currency_totals")
    for table in (
        "ledger_loans",
        "ledger_holdings",
        "ledger_batches",
        "ledger_currency_totals",
        "ledger_open_pendings",
        "ledger_transfers",
        "ledger_accounts",
    ):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS ledger_accounts_totals()")
        op.execute("DROP FUNCTION IF EXISTS ledger_check_balanced()")
        op.execute("DROP FUNCTION IF EXISTS ledger_accounts_currency_fixed()")
