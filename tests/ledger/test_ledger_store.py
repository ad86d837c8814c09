"""The SQL ledger on SQLite and PostgreSQL: batches, idempotency, and the database's own balance checks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from tranche.ledger.adapters import SqlLedger
from tranche.ledger.domain import Account, AccountKind, Outcome, Phase, Transfer
from tranche.ledger.errors import AccountExistsError, OverdraftError, UnbalancedLedgerError
from tranche.shared.clock import ManualClock


def make_ledger(engine: Engine, clock: ManualClock | None = None) -> SqlLedger:
    ledger = SqlLedger(engine, clock or ManualClock(), batch_size=50)
    ledger.open_accounts(
        [
            Account("world:EUR", "EUR", AccountKind.WORLD),
            Account(
                "alice", "EUR", AccountKind.INVESTOR_CASH, debits_must_not_exceed_credits=True, owner_id="a"
            ),
            Account(
                "bob", "EUR", AccountKind.INVESTOR_CASH, debits_must_not_exceed_credits=True, owner_id="b"
            ),
            Account("lender", "EUR", AccountKind.LENDER_SETTLEMENT),
        ]
    )
    return ledger


def test_deposits_are_stored_and_every_currency_sums_to_zero(engine: Engine) -> None:
    ledger = make_ledger(engine)
    results = ledger.submit([Transfer(f"d{i}", "world:EUR", "alice", 100 + i, "EUR") for i in range(120)])
    assert all(r.outcome is Outcome.CREATED for r in results)
    assert ledger.account("alice").balance == sum(100 + i for i in range(120))
    assert ledger.net_by_currency() == {"EUR": (0, 0)}


def test_a_replayed_batch_changes_nothing(engine: Engine) -> None:
    ledger = make_ledger(engine)
    batch = [Transfer(f"d{i}", "world:EUR", "bob", 10, "EUR") for i in range(60)]
    ledger.submit(batch)
    again = ledger.submit(batch)
    assert {r.outcome for r in again} == {Outcome.EXISTS}
    assert ledger.account("bob").balance == 600


def test_an_overdraft_is_refused_and_nothing_of_its_chain_is_stored(engine: Engine) -> None:
    ledger = make_ledger(engine)
    ledger.submit([Transfer("d", "world:EUR", "alice", 500, "EUR")])
    results = ledger.submit(
        [
            Transfer("fee", "alice", "lender", 100, "EUR", linked=True),
            Transfer("w", "alice", "world:EUR", 401, "EUR"),
        ]
    )
    assert isinstance(results[1].error, OverdraftError) and results[1].error.record == "alice"
    assert ledger.account("alice").balance == 500
    assert ledger.transfers(["fee", "w"]) == {}


def test_reservations_post_and_void_across_batches(engine: Engine) -> None:
    ledger = make_ledger(engine)
    ledger.submit(
        [
            Transfer("d", "world:EUR", "alice", 1_000, "EUR"),
            Transfer("p1", "alice", "lender", 600, "EUR", phase=Phase.PENDING),
            Transfer("p2", "alice", "lender", 400, "EUR", phase=Phase.PENDING),
        ]
    )
    assert ledger.account("alice").available == 0
    results = ledger.submit([Transfer.post("p1.post", "p1", "EUR"), Transfer.void("p2.void", "p2", "EUR")])
    assert all(r.ok for r in results)
    assert ledger.account("alice").available == 400
    assert ledger.account("lender").balance == 600
    assert ledger.net_by_currency() == {"EUR": (0, 0)}


def test_reservations_past_their_timeout_are_voided_by_the_sweep(engine: Engine) -> None:
    clock = ManualClock()
    ledger = make_ledger(engine, clock)
    ledger.submit(
        [
            Transfer("d", "world:EUR", "alice", 1_000, "EUR"),
            Transfer("p1", "alice", "lender", 600, "EUR", phase=Phase.PENDING, timeout_us=30_000_000),
            Transfer("p2", "alice", "lender", 100, "EUR", phase=Phase.PENDING),
        ]
    )
    assert ledger.expire_pendings() == []
    clock.advance(timedelta(seconds=30))
    [expired] = ledger.expire_pendings()
    assert expired.id == "p1~expired" and expired.ok
    assert ledger.account("alice").available == 900
    assert ledger.expire_pendings() == []


def test_an_account_reopened_with_another_definition_is_a_conflict(engine: Engine) -> None:
    ledger = make_ledger(engine)
    ledger.open_accounts([Account("alice", "EUR", AccountKind.INVESTOR_CASH, True, owner_id="a")])
    with pytest.raises(AccountExistsError) as caught:
        ledger.open_accounts([Account("alice", "EUR", AccountKind.INVESTOR_CASH, owner_id="a")])
    assert caught.value.field == "debits_must_not_exceed_credits"


def test_the_database_refuses_a_batch_that_leaves_a_currency_unbalanced(engine: Engine) -> None:
    ledger = make_ledger(engine)
    ledger.submit([Transfer("d", "world:EUR", "alice", 1_000, "EUR")])
    with pytest.raises(DBAPIError, match="ledger unbalanced"), engine.begin() as conn:
        # Credit one account without debiting another: what a bug in the apply loop would do.
        conn.exec_driver_sql(
            "UPDATE ledger_accounts SET credits_posted = credits_posted + 1 WHERE id = 'bob'"
        )
        conn.exec_driver_sql("INSERT INTO ledger_batches (created_at, transfers) VALUES (0, 0)")
    assert ledger.account("bob").balance == 0
    assert ledger.net_by_currency() == {"EUR": (0, 0)}


@pytest.mark.postgres
def test_postgres_refuses_to_commit_an_unbalanced_currency_even_without_a_batch_row(
    postgres_engine: Engine,
) -> None:
    # Deferred constraint triggers are PostgreSQL's; SQLite is checked at the next batch (test above).
    engine = postgres_engine
    ledger = make_ledger(engine)
    with pytest.raises(DBAPIError, match="ledger unbalanced"), engine.begin() as conn:
        conn.exec_driver_sql("UPDATE ledger_accounts SET credits_posted = 5 WHERE id = 'bob'")
    assert ledger.account("bob").balance == 0


def test_the_database_refuses_an_overdrawn_flagged_account(engine: Engine) -> None:
    make_ledger(engine)
    with pytest.raises(DBAPIError, match="debits_within_credits"), engine.begin() as conn:
        conn.exec_driver_sql("UPDATE ledger_accounts SET debits_posted = 1 WHERE id = 'alice'")


def test_a_batch_on_top_of_corrupted_totals_is_refused_as_an_unbalanced_ledger(engine: Engine) -> None:
    ledger = make_ledger(engine)
    with engine.begin() as conn:
        # Corrupt the totals behind the triggers' back (PostgreSQL would refuse it at commit otherwise).
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE ledger_currency_totals DISABLE TRIGGER ledger_totals_balanced")
        conn.exec_driver_sql("UPDATE ledger_currency_totals SET net_posted = 1")
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE ledger_currency_totals ENABLE TRIGGER ledger_totals_balanced")
    with pytest.raises(UnbalancedLedgerError):
        ledger.submit([Transfer("d", "world:EUR", "alice", 1, "EUR")])
    assert ledger.transfers(["d"]) == {}
