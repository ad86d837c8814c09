"""ledger: on PostgreSQL, check a batch's accounts once per statement instead of once per transfer

Revision ID: ledger_0003
Revises: ledger_0002

A foreign key checks each inserted transfer's two accounts with a query of its own; a batch of 50,000 transfers
made 100,000 of them, which cost more than writing the transfers. On PostgreSQL the check becomes one statement
trigger that joins all the statement's new transfers with the accounts at once (same rule: both accounts exist,
in the transfer's currency), and accounts can no longer be deleted or renamed (what the foreign keys also
guarded). ``ledger_accounts`` leaves room on its pages so that updating a batch's totals stays on the page
(HOT) instead of touching every index. SQLite keeps its foreign keys: it checks them in-process, cheaply.
"""

from alembic import op

revision = "ledger_0003"
down_revision = "ledger_0002"
branch_labels = None
depends_on = None

_UP = [
    "ALTER TABLE ledger_transfers DROP CONSTRAINT fk_ledger_transfers_debit_account",
    "ALTER TABLE ledger_transfers DROP CONSTRAINT fk_ledger_transfers_credit_account",
    """
    CREATE FUNCTION ledger_transfers_accounts_known() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (
            SELECT 1 FROM new_rows n
            WHERE NOT EXISTS (
                SELECT 1 FROM ledger_accounts a WHERE a.id = n.debit_account_id AND a.currency = n.currency)
            OR NOT EXISTS (
                SELECT 1 FROM ledger_accounts a WHERE a.id = n.credit_account_id AND a.currency = n.currency)
        ) THEN
            RAISE EXCEPTION 'ledger transfer names an account that does not exist in its currency'
                USING ERRCODE = '23503';
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER ledger_transfers_accounts_known AFTER INSERT ON ledger_transfers
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger_transfers_accounts_known()
    """,
    """
    CREATE FUNCTION ledger_accounts_kept() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'ledger accounts are never deleted nor renamed' USING ERRCODE = '23503';
    END
    $$
    """,
    "CREATE TRIGGER ledger_accounts_kept_delete BEFORE DELETE ON ledger_accounts "
    "FOR EACH ROW EXECUTE FUNCTION ledger_accounts_kept()",
    "CREATE TRIGGER ledger_accounts_kept_id BEFORE UPDATE OF id ON ledger_accounts "
    "FOR EACH ROW WHEN (NEW.id <> OLD.id) EXECUTE FUNCTION ledger_accounts_kept()",
    "ALTER TABLE ledger_accounts SET (fillfactor = 70)",
]

_DOWN = [
    "ALTER TABLE ledger_accounts RESET (fillfactor)",
    "DROP TRIGGER ledger_accounts_kept_id ON ledger_accounts",
    "DROP TRIGGER ledger_accounts_kept_delete ON ledger_accounts",
    "DROP FUNCTION ledger_accounts_kept()",
    "DROP TRIGGER ledger_transfers_accounts_known ON ledger_transfers",
    "DROP FUNCTION ledger_transfers_accounts_known()",
    "ALTER TABLE ledger_transfers ADD CONSTRAINT fk_ledger_transfers_debit_account FOREIGN KEY "
    "(debit_account_id, currency) REFERENCES ledger_accounts (id, currency)",
    "ALTER TABLE ledger_transfers ADD CONSTRAINT fk_ledger_transfers_credit_account FOREIGN KEY "
    "(credit_account_id, currency) REFERENCES ledger_accounts (id, currency)",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _DOWN:
            op.execute(statement)
