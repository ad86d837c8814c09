"""Every backend of the ledger's store passes the same contract (in memory, SQLite, PostgreSQL); then what only
the databases do: check the balances themselves, and sync every commit."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DBAPIError

from tranche.ledger import (
    Account,
    AccountKind,
    CashAvailable,
    HoldingStatus,
    InMemoryLedgerStore,
    LedgerStore,
    Outcome,
    Phase,
    SqlLedgerStore,
    Transfer,
    UnbalancedLedgerError,
)
from tranche.ledger.errors import AccountExistsError, OverdraftError
from tranche.ledger.store import HoldingRow, LedgerTransaction, LoanRow
from tranche.shared.clock import ManualClock

START = datetime(2026, 3, 1, tzinfo=UTC)
WORLD = Account("world:EUR", "EUR", AccountKind.WORLD)
ALICE = Account("alice", "EUR", AccountKind.INVESTOR_CASH, debits_must_not_exceed_credits=True, owner_id="a")
BOB = Account("bob", "EUR", AccountKind.INVESTOR_CASH, debits_must_not_exceed_credits=True, owner_id="b")
LENDER = Account("lender", "EUR", AccountKind.LENDER_SETTLEMENT, owner_id="len")
ACCOUNTS = (WORLD, ALICE, BOB, LENDER)


def submit(store: LedgerStore, *transfers: Transfer) -> list[Any]:
    return store.atomic(lambda tx: tx.apply(transfers, ACCOUNTS).results)


def holding(bid: str, portfolio: str = "pf1", status: HoldingStatus = HoldingStatus.RESERVED) -> HoldingRow:
    return HoldingRow(bid, "a", portfolio, "len", "L1", "EUR", 500, Decimal("0.08"), Decimal("0.1"), status)


class LedgerStoreContract:
    """Subclasses provide ``store`` (an empty store whose clock is ``clock``)."""

    def test_deposits_are_stored_and_every_currency_sums_to_zero(self, store: LedgerStore) -> None:
        results = submit(
            store, *(Transfer(f"d{i}", "world:EUR", "alice", 100 + i, "EUR") for i in range(120))
        )
        assert all(r.outcome is Outcome.CREATED for r in results)
        assert store.accounts(["alice"])["alice"].balance == sum(100 + i for i in range(120))
        assert store.net_by_currency() == {"EUR": (0, 0)}

    def test_activity_counts_batches_transfers_and_open_reservations(self, store: LedgerStore) -> None:
        assert store.activity() == (0, 0, 0)
        submit(store, Transfer("d", "world:EUR", "alice", 500, "EUR"))
        submit(
            store, *(Transfer(f"p{i}", "alice", "lender", 1, "EUR", phase=Phase.PENDING) for i in range(3))
        )
        submit(store, Transfer.void("v", "p0", "EUR"))
        submit(store, Transfer("d", "world:EUR", "alice", 500, "EUR"))  # exists: no batch
        assert store.activity() == (3, 5, 2)

    def test_a_replayed_batch_changes_nothing(self, store: LedgerStore) -> None:
        batch = [Transfer(f"d{i}", "world:EUR", "bob", 10, "EUR") for i in range(60)]
        submit(store, *batch)
        again = submit(store, *batch)
        assert {r.outcome for r in again} == {Outcome.EXISTS}
        assert store.accounts(["bob"])["bob"].balance == 600

    def test_an_overdraft_is_refused_and_nothing_of_its_chain_is_stored(self, store: LedgerStore) -> None:
        submit(store, Transfer("d", "world:EUR", "alice", 500, "EUR"))
        results = submit(
            store,
            Transfer("fee", "alice", "lender", 100, "EUR", linked=True),
            Transfer("w", "alice", "world:EUR", 401, "EUR"),
        )
        assert isinstance(results[1].error, OverdraftError) and results[1].error.record == "alice"
        assert store.accounts(["alice"])["alice"].balance == 500
        assert store.transfers(["fee", "w"]) == {}

    def test_an_account_is_opened_only_by_a_transfer_that_uses_it(self, store: LedgerStore) -> None:
        [refused] = submit(store, Transfer("w", "bob", "world:EUR", 1, "EUR"))
        assert not refused.ok
        assert store.accounts(["bob", "alice", "world:EUR"]) == {}
        submit(store, Transfer("d", "world:EUR", "bob", 7, "EUR"))
        assert set(store.accounts(["bob", "alice", "world:EUR"])) == {"bob", "world:EUR"}

    def test_an_account_proposed_with_another_definition_is_a_conflict(self, store: LedgerStore) -> None:
        submit(store, Transfer("d", "world:EUR", "alice", 5, "EUR"))
        other = Account("alice", "EUR", AccountKind.INVESTOR_CASH, owner_id="a")
        with pytest.raises(AccountExistsError) as caught:
            store.atomic(lambda tx: tx.apply([Transfer("x", "world:EUR", "alice", 1, "EUR")], [other, WORLD]))
        assert caught.value.field == "debits_must_not_exceed_credits"
        assert store.transfers(["x"]) == {}

    def test_reservations_post_and_void_across_batches(self, store: LedgerStore) -> None:
        submit(
            store,
            Transfer("d", "world:EUR", "alice", 1_000, "EUR"),
            Transfer("p1", "alice", "lender", 600, "EUR", phase=Phase.PENDING),
            Transfer("p2", "alice", "lender", 400, "EUR", phase=Phase.PENDING),
        )
        assert store.accounts(["alice"])["alice"].available == 0
        results = submit(store, Transfer.post("p1.post", "p1", "EUR"), Transfer.void("p2.void", "p2", "EUR"))
        assert all(r.ok for r in results)
        assert store.accounts(["alice"])["alice"].available == 400
        assert store.accounts(["lender"])["lender"].balance == 600
        assert store.transfers(["p2.void"])["p2.void"].amount == 400
        assert store.net_by_currency() == {"EUR": (0, 0)}

    def test_open_reservations_past_their_timeout_are_listed_oldest_first(
        self, store: LedgerStore, clock: ManualClock
    ) -> None:
        submit(
            store,
            Transfer("d", "world:EUR", "alice", 1_000, "EUR"),
            Transfer("p1", "alice", "lender", 600, "EUR", phase=Phase.PENDING, timeout_us=30_000_000),
            Transfer("p2", "alice", "lender", 100, "EUR", phase=Phase.PENDING),
            Transfer("p3", "alice", "lender", 100, "EUR", phase=Phase.PENDING, timeout_us=10_000_000),
        )
        now = micros(clock)
        assert store.expired_pendings(now, 10) == []
        assert [t.id for t in store.expired_pendings(now + 30_000_000, 10)] == ["p3", "p1"]
        submit(store, Transfer.void("p3.void", "p3", "EUR"))
        assert [t.id for t in store.expired_pendings(now + 30_000_000, 10)] == ["p1"]

    def test_holdings_and_loans_are_kept_beside_the_transfers(self, store: LedgerStore) -> None:
        def write(tx: LedgerTransaction) -> None:
            tx.add_holdings([holding("b1"), holding("b2", "pf2"), holding("b3", "pf1", HoldingStatus.ACTIVE)])
            tx.add_holdings([holding("b1", "elsewhere")])  # stored once
            tx.update_holdings(["b3"], HoldingStatus.WRITTEN_OFF, {"b3": 200})
            tx.put_loan(LoanRow("len", "L1", "EUR", "active", None, 1))
            tx.put_loan(LoanRow("len", "L1", "EUR", "repaid", 0, 3))

        store.atomic(write)
        rows = store.holdings_with_balance(portfolio_ids=["pf1"])
        assert [(r.bid_id, r.portfolio_id, r.status, r.written_off, held) for r, held in rows] == [
            ("b1", "pf1", HoldingStatus.RESERVED, 0, 0),
            ("b3", "pf1", HoldingStatus.WRITTEN_OFF, 200, 0),
        ]
        assert [r.bid_id for r, _ in store.holdings_with_balance(investor_id="a", statuses=["reserved"])] == [
            "b1",
            "b2",
        ]
        assert store.loans("len", ["L1", "L2"]) == {"L1": LoanRow("len", "L1", "EUR", "repaid", 0, 3)}
        assert store.atomic(lambda tx: tx.holdings_of_loan("len", "L1", [HoldingStatus.RESERVED])) == [
            holding("b1"),
            holding("b2", "pf2"),
        ]

    def test_a_holdings_balance_is_the_principal_its_account_holds(self, store: LedgerStore) -> None:
        hold = Account("hold:b1", "EUR", AccountKind.INVESTOR_HOLDING, True, owner_id="a", portfolio_id="pf1")
        principal = Account(
            "loan:len:L1:EUR", "EUR", AccountKind.LOAN_PRINCIPAL, credits_must_not_exceed_debits=True
        )

        def buy(tx: LedgerTransaction) -> None:
            tx.apply([Transfer("h", principal.id, hold.id, 300, "EUR")], [hold, principal])
            tx.add_holdings([holding("b1", status=HoldingStatus.ACTIVE)])

        store.atomic(buy)
        [(row, held)] = store.holdings_with_balance(portfolio_ids=["pf1"])
        assert (row.amount, held) == (500, 300)

    def test_postings_walk_an_accounts_movements_in_order(
        self, store: LedgerStore, clock: ManualClock
    ) -> None:
        submit(store, Transfer("d1", "world:EUR", "alice", 1_000, "EUR", "deposit"))
        clock.advance(timedelta(days=1))
        submit(
            store,
            Transfer("p", "alice", "lender", 300, "EUR", phase=Phase.PENDING),
            Transfer("w", "alice", "world:EUR", 100, "EUR", "withdrawal"),
        )
        submit(store, Transfer.post("p.post", "p", "EUR", code="funding"))
        everything = store.postings("alice", 0, 2**62, 0, 10)
        assert [(p.transfer_id, p.amount, p.code) for p in everything] == [
            ("d1", 1_000, "deposit"),
            ("w", -100, "withdrawal"),
            ("p.post", -300, "funding"),
        ]
        assert store.postings("alice", 0, 2**62, everything[0].seq, 1)[0].transfer_id == "w"
        day_two = everything[1].created_us
        assert store.net_posted("alice", 0, day_two) == 1_000
        assert store.net_posted("alice", day_two, 2**62) == -400

    def test_events_are_published_with_the_transaction_and_not_without_it(self, store: LedgerStore) -> None:
        event = CashAvailable("a", "EUR", 5)

        def fail(tx: LedgerTransaction) -> None:
            tx.publish(CashAvailable("a", "EUR", 6))
            tx.apply([Transfer("d", "world:EUR", "alice", 6, "EUR")], ACCOUNTS)
            raise RuntimeError("the flow fails after publishing")

        with pytest.raises(RuntimeError):
            store.atomic(fail)
        store.atomic(lambda tx: tx.publish(event))
        assert self.published(store) == [event]
        assert store.transfers(["d"]) == {}

    def test_a_burst_of_changes_makes_one_notification_per_portfolio_once_its_window_has_passed(
        self, store: LedgerStore, clock: ManualClock
    ) -> None:
        opened = micros(clock)
        for i in range(300):
            store.atomic(
                lambda tx, i=i: tx.record_drift([("p1", "inv1", f"loan{i % 7}"), ("p2", "inv2", "loanX")])
            )
            clock.advance(timedelta(milliseconds=10))
        assert store.atomic(lambda tx: tx.take_drift(opened - 1, 100)) == []
        released = store.atomic(lambda tx: tx.take_drift(opened, 100))
        assert [(d.portfolio_id, d.investor_id, d.changes, len(d.loan_ids)) for d in released] == [
            ("p1", "inv1", 300, 7),
            ("p2", "inv2", 300, 1),
        ]
        assert released[0].first_at == START and released[0].last_at == START + timedelta(milliseconds=2990)
        assert store.atomic(lambda tx: tx.take_drift(micros(clock), 100)) == []

    def test_a_change_after_a_notification_opens_a_new_window(
        self, store: LedgerStore, clock: ManualClock
    ) -> None:
        store.atomic(lambda tx: tx.record_drift([("p1", "inv1", "l1")]))
        clock.advance(timedelta(seconds=31))
        assert len(store.atomic(lambda tx: tx.take_drift(micros(clock), 10))) == 1
        store.atomic(lambda tx: tx.record_drift([("p1", "inv1", "l2"), ("p1", "inv1", "l2")]))
        [again] = store.atomic(lambda tx: tx.take_drift(micros(clock), 10))
        assert (again.loan_ids, again.changes, again.first_at) == (("l2",), 2, clock.now())

    def published(self, store: LedgerStore) -> list[Any]:
        raise NotImplementedError


def micros(clock: ManualClock) -> int:
    return int((clock.now() - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


class TestInMemoryLedgerStore(LedgerStoreContract):
    @pytest.fixture
    def store(self, clock: ManualClock) -> LedgerStore:
        return InMemoryLedgerStore(clock)

    def published(self, store: LedgerStore) -> list[Any]:
        assert isinstance(store, InMemoryLedgerStore)
        return store.published


class TestSqlLedgerStore(LedgerStoreContract):
    @pytest.fixture
    def store(self, engine: Engine, clock: ManualClock) -> LedgerStore:
        return SqlLedgerStore(engine, clock)

    def published(self, store: LedgerStore) -> list[Any]:
        assert isinstance(store, SqlLedgerStore)
        with store.engine.connect() as conn:
            rows = conn.execute(text("SELECT topic, type, payload FROM bus_outbox ORDER BY seq")).all()
        return [CashAvailable(**json.loads(bytes(r.payload))) for r in rows if r.type == "CashAvailable"]


def make_store(engine: Engine) -> SqlLedgerStore:
    store = SqlLedgerStore(engine, ManualClock(START))
    submit(
        store,
        Transfer("seed", "world:EUR", "bob", 1, "EUR"),
        Transfer("seed2", "world:EUR", "alice", 1, "EUR"),
    )
    return store


def test_the_database_refuses_a_batch_that_leaves_a_currency_unbalanced(engine: Engine) -> None:
    store = make_store(engine)
    with pytest.raises(DBAPIError, match="ledger unbalanced"), engine.begin() as conn:
        # Credit one account without debiting another: what a bug in the apply loop would do.
        conn.exec_driver_sql(
            "UPDATE ledger_accounts SET credits_posted = credits_posted + 1 WHERE id = 'bob'"
        )
        conn.exec_driver_sql("INSERT INTO ledger_batches (created_at, transfers) VALUES (0, 0)")
    assert store.accounts(["bob"])["bob"].balance == 1
    assert store.net_by_currency() == {"EUR": (0, 0)}


@pytest.mark.postgres
def test_postgres_refuses_to_commit_an_unbalanced_currency_even_without_a_batch_row(
    postgres_engine: Engine,
) -> None:
    # Deferred constraint triggers are PostgreSQL's; SQLite is checked at the next batch (test above).
    store = make_store(postgres_engine)
    with pytest.raises(DBAPIError, match="ledger unbalanced"), postgres_engine.begin() as conn:
        conn.exec_driver_sql("UPDATE ledger_accounts SET credits_posted = 5 WHERE id = 'bob'")
    assert store.accounts(["bob"])["bob"].balance == 1


def test_the_database_refuses_an_overdrawn_flagged_account(engine: Engine) -> None:
    make_store(engine)
    with pytest.raises(DBAPIError, match="debits_within_credits"), engine.begin() as conn:
        conn.exec_driver_sql("UPDATE ledger_accounts SET debits_posted = 2 WHERE id = 'alice'")


def test_a_batch_on_top_of_corrupted_totals_is_refused_as_an_unbalanced_ledger(engine: Engine) -> None:
    store = make_store(engine)
    with engine.begin() as conn:
        # Corrupt the totals behind the triggers' back (PostgreSQL would refuse it at commit otherwise).
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE ledger_currency_totals DISABLE TRIGGER ledger_totals_balanced")
        conn.exec_driver_sql("UPDATE ledger_currency_totals SET net_posted = 1")
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE ledger_currency_totals ENABLE TRIGGER ledger_totals_balanced")
    with pytest.raises(UnbalancedLedgerError):
        submit(store, Transfer("d", "world:EUR", "alice", 1, "EUR"))
    assert store.transfers(["d"]) == {}


def test_every_ledger_transaction_is_synced_to_disk_when_it_commits(engine: Engine) -> None:
    """SQLite: synchronous=FULL inside the ledger's transactions (NORMAL elsewhere); PostgreSQL:
    synchronous_commit=on whatever the server's default."""
    store = make_store(engine)
    seen: list[str] = []
    query = "PRAGMA synchronous" if engine.dialect.name == "sqlite" else "SHOW synchronous_commit"

    def look(tx: LedgerTransaction) -> None:
        seen.append(str(tx.sql.conn.exec_driver_sql(query).scalar_one()))  # type: ignore[attr-defined]

    store.atomic(look)
    with engine.connect() as conn:
        outside = str(conn.exec_driver_sql(query).scalar_one())
    assert seen == (["2"] if engine.dialect.name == "sqlite" else ["on"])  # 2 is FULL
    if engine.dialect.name == "sqlite":
        assert outside == "1"  # NORMAL again for everything else


def test_the_database_refuses_a_transfer_naming_an_account_that_does_not_exist(engine: Engine) -> None:
    make_store(engine)
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, currency, code, ref, "
            "phase, pending_id, timeout_us, created_at, expires_at) "
            "VALUES ('x', 'world:EUR', 'nobody', 1, 'EUR', '', '', 'single', NULL, 0, 0, 0)"
        )


def test_the_database_refuses_to_delete_an_account_with_transfers(engine: Engine) -> None:
    store = make_store(engine)
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM ledger_accounts WHERE id = 'bob'")
    assert store.accounts(["bob"])["bob"].balance == 1


accounts_strategy = st.sampled_from(["world:EUR", "alice", "bob", "lender", "nobody"])
batches_strategy = st.lists(
    st.lists(
        st.one_of(
            st.builds(
                lambda n, d, c, amount, linked, pending: Transfer(
                    f"t{n}",
                    d,
                    c,
                    amount,
                    "EUR",
                    phase=Phase.PENDING if pending else Phase.SINGLE,
                    linked=linked,
                ),
                st.integers(0, 15),
                accounts_strategy,
                accounts_strategy,
                st.integers(0, 400),
                st.booleans(),
                st.booleans(),
            ),
            st.builds(
                lambda n, p, post, linked: (Transfer.post if post else Transfer.void)(
                    f"r{n}", f"t{p}", "EUR", linked=linked
                ),
                st.integers(0, 15),
                st.integers(0, 15),
                st.booleans(),
                st.booleans(),
            ),
        ),
        max_size=12,
    ),
    min_size=1,
    max_size=5,
)


def test_the_sql_store_applies_any_batches_as_the_in_memory_one_does(engine: Engine) -> None:
    """The in-memory store is the oracle of the SQL one (on PostgreSQL its binary COPY and array statements)."""
    examples = count()

    @settings(
        max_examples=30 if engine.dialect.name == "sqlite" else 15,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
        database=None,
    )
    @given(batches_strategy)
    def agree(batches: list[list[Transfer]]) -> None:
        prefix = f"e{next(examples)}-"
        clock = ManualClock(START)
        sql, memory = SqlLedgerStore(engine, clock), InMemoryLedgerStore(clock)
        accounts = tuple(replace(a, id=prefix + a.id) for a in ACCOUNTS)
        for batch in [[Transfer("seed", "world:EUR", "alice", 500, "EUR")], *batches]:
            batch = [
                replace(
                    t,
                    id=prefix + t.id,
                    debit_account_id=t.debit_account_id and prefix + t.debit_account_id,
                    credit_account_id=t.credit_account_id and prefix + t.credit_account_id,
                    pending_id=t.pending_id and prefix + t.pending_id,
                )
                for t in batch
            ]
            results = [
                store.atomic(lambda tx, batch=batch: tx.apply(batch, accounts).results)
                for store in (sql, memory)
            ]
            assert [(r.id, r.outcome, type(r.error)) for r in results[0]] == [
                (r.id, r.outcome, type(r.error)) for r in results[1]
            ]
            clock.advance(timedelta(seconds=1))
        ids = [a.id for a in accounts]
        assert sql.accounts(ids) == memory.accounts(ids)

    agree()


def test_flows_that_arrive_together_commit_together_and_one_that_fails_leaves_the_others_be(
    engine: Engine,
) -> None:
    """Group commit (SQLite): while one transaction commits, the flows that arrive wait and then share the next
    one (one sync for all of them); each runs in a savepoint of its own. PostgreSQL commits each on its own."""
    first = threading.Event()

    def slow_first(_conn: Any) -> None:
        if not first.is_set():
            first.set()
            time.sleep(0.3)  # the flows below arrive while this transaction runs

    store = SqlLedgerStore(engine, ManualClock(START), guard=slow_first)
    commits: list[int] = []
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    submit(store, Transfer("seed", "world:EUR", "alice", 100, "EUR"))
    commits.clear()
    first.clear()
    results: dict[str, Any] = {}

    def flow(name: str, transfer: Transfer) -> None:
        try:
            results[name] = submit(store, transfer)[0].outcome
        except Exception as error:
            results[name] = error

    threads = [threading.Thread(target=flow, args=("lead", Transfer("lead", "world:EUR", "bob", 1, "EUR")))]
    threads[0].start()
    first.wait(5)
    threads += [
        threading.Thread(target=flow, args=(f"d{n}", Transfer(f"d{n}", "world:EUR", "bob", 10, "EUR")))
        for n in range(8)
    ]
    threads.append(threading.Thread(target=flow, args=("over", Transfer("over", "alice", "bob", 101, "EUR"))))
    threads.append(
        threading.Thread(
            target=flow, args=("boom", Transfer("boom", "world:EUR", "bob", 1, "XXX"))
        )  # refused
    )
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [results[f"d{n}"] for n in range(8)] == [Outcome.CREATED] * 8 and results[
        "lead"
    ] is Outcome.CREATED
    assert results["over"] is Outcome.FAILED and results["boom"] is Outcome.FAILED
    assert store.accounts(["bob"])["bob"].balance == 81
    if engine.dialect.name == "sqlite":
        assert len(commits) <= 3  # the lead's, then the others in one or two groups
    assert store.net_by_currency() == {"EUR": (0, 0)}


def test_a_flow_that_raises_in_a_group_rolls_back_alone(engine: Engine) -> None:
    store = SqlLedgerStore(engine, ManualClock(START))

    def fails(tx: LedgerTransaction) -> None:
        tx.apply([Transfer("x", "world:EUR", "alice", 5, "EUR")], ACCOUNTS)
        raise RuntimeError("after writing")

    with pytest.raises(RuntimeError):
        store.atomic(fails)
    assert store.transfers(["x"]) == {} and submit(store, Transfer("y", "world:EUR", "alice", 5, "EUR"))[0].ok
