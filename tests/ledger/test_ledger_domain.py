"""The pure transfer rule (plan_batch): balances, flags, idempotency, linked chains, two-phase transfers, accounts
opened on first use, 64-bit totals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tranche.ledger.domain import (
    MAX_AMOUNT,
    Account,
    AccountKind,
    Outcome,
    Phase,
    Transfer,
    TransferResult,
    net_by_currency,
)
from tranche.ledger.errors import (
    AccountCurrencyError,
    AmountOverflowError,
    InvalidTransferError,
    LinkedTransferFailedError,
    OverdraftError,
    PendingTransferExpiredError,
    PendingTransferResolvedError,
    PostExceedsPendingError,
    TransferExistsError,
    UnknownAccountError,
)
from tranche.ledger.planning import Snapshot, plan_batch


def accounts() -> dict[str, Account]:
    listed = [
        Account("world", "EUR", AccountKind.WORLD),
        Account("alice", "EUR", AccountKind.INVESTOR_CASH, debits_must_not_exceed_credits=True),
        Account("bob", "EUR", AccountKind.INVESTOR_CASH, debits_must_not_exceed_credits=True),
        Account("lender", "EUR", AccountKind.LENDER_SETTLEMENT),
        Account("usd-world", "USD", AccountKind.WORLD),
    ]
    return {a.id: a for a in listed}


class Ledger:
    """The pure rule driven like a store: state carried from batch to batch, every stored transfer in the
    snapshot."""

    def __init__(self) -> None:
        self.accounts = accounts()
        self.stored: dict[str, Transfer] = {}
        self.now = 1_000_000

    def submit(self, *transfers: Transfer, proposed: tuple[Account, ...] = ()) -> list[TransferResult]:
        resolved = {t.pending_id: t.id for t in self.stored.values() if t.pending_id is not None}
        fresh = {a.id: a for a in proposed if a.id not in self.accounts}
        snapshot = Snapshot({**self.accounts, **fresh}, self.stored, self.stored, resolved, frozenset(fresh))
        plan = plan_batch(transfers, snapshot, self.now)
        for t in plan.stamped():
            self.stored[t.id] = t
        for account_id in plan.changed:
            after = plan.after(account_id)
            assert after is not None
            self.accounts[account_id] = after
        return plan.results


def move(id: str, debit: str, credit: str, amount: int, **kw) -> Transfer:  # type: ignore[no-untyped-def]
    return Transfer(id, debit, credit, amount, "EUR", **kw)


def test_a_deposit_credits_the_investor_and_every_currency_still_sums_to_zero() -> None:
    ledger = Ledger()
    [result] = ledger.submit(move("d1", "world", "alice", 10_000, code="deposit"))
    assert result.outcome is Outcome.CREATED
    assert ledger.accounts["alice"].balance == 10_000
    assert ledger.accounts["world"].balance == -10_000
    assert net_by_currency(ledger.accounts.values()) == {"EUR": (0, 0), "USD": (0, 0)}


def test_a_transfer_that_would_overdraw_is_refused_naming_the_account_and_changes_nothing() -> None:
    ledger = Ledger()
    ledger.submit(move("d1", "world", "alice", 5_000))
    [result] = ledger.submit(move("w1", "alice", "world", 5_001))
    assert result.outcome is Outcome.FAILED
    assert isinstance(result.error, OverdraftError)
    assert result.error.record == "alice"
    assert result.error.available == 5_000 and result.error.needed == 5_001
    assert "alice" in str(result.error)
    assert ledger.accounts["alice"].balance == 5_000
    assert "w1" not in ledger.stored


def test_the_same_id_and_body_twice_has_one_effect() -> None:
    ledger = Ledger()
    ledger.submit(move("d1", "world", "alice", 700))
    [again] = ledger.submit(move("d1", "world", "alice", 700))
    [within] = ledger.submit(move("d2", "world", "alice", 1), move("d2", "world", "alice", 1))[1:]
    assert again.outcome is Outcome.EXISTS and within.outcome is Outcome.EXISTS
    assert ledger.accounts["alice"].balance == 701


def test_a_reused_id_with_another_body_is_a_conflict_naming_the_field() -> None:
    ledger = Ledger()
    ledger.submit(move("d1", "world", "alice", 700))
    [result] = ledger.submit(move("d1", "world", "alice", 701))
    assert isinstance(result.error, TransferExistsError)
    assert result.error.field == "amount" and result.error.record == "d1"
    assert ledger.accounts["alice"].balance == 700


def test_a_linked_chain_applies_whole_or_not_at_all() -> None:
    ledger = Ledger()
    ledger.submit(move("d1", "world", "alice", 100))
    results = ledger.submit(
        move("a", "world", "bob", 50, linked=True),
        move("b", "alice", "lender", 150),  # overdraws alice: the whole chain fails
        move("c", "world", "bob", 7),
    )
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.FAILED, Outcome.CREATED]
    assert isinstance(results[0].error, LinkedTransferFailedError) and results[0].error.record == "b"
    assert isinstance(results[1].error, OverdraftError)
    assert ledger.accounts["bob"].balance == 7
    assert ledger.accounts["alice"].balance == 100
    assert set(ledger.stored) == {"d1", "c"}


def test_a_chain_left_open_at_the_end_of_a_batch_fails() -> None:
    ledger = Ledger()
    results = ledger.submit(move("a", "world", "bob", 50, linked=True))
    assert isinstance(results[0].error, InvalidTransferError) and results[0].error.field == "linked"
    assert ledger.accounts["bob"].balance == 0


def test_a_pending_transfer_reserves_cash_that_a_withdrawal_cannot_take() -> None:
    ledger = Ledger()
    ledger.submit(move("d1", "world", "alice", 1_000))
    ledger.submit(move("p1", "alice", "lender", 800, phase=Phase.PENDING))
    assert ledger.accounts["alice"].available == 200
    assert ledger.accounts["alice"].balance == 1_000
    [refused] = ledger.submit(move("w1", "alice", "world", 201))
    assert isinstance(refused.error, OverdraftError) and refused.error.available == 200


def test_posting_moves_the_reserved_money_and_voiding_releases_it() -> None:
    ledger = Ledger()
    ledger.submit(move("d1", "world", "alice", 1_000))
    ledger.submit(
        move("p1", "alice", "lender", 300, phase=Phase.PENDING),
        move("p2", "alice", "lender", 400, phase=Phase.PENDING),
    )
    ledger.submit(Transfer.post("p1-post", "p1", "EUR"), Transfer.void("p2-void", "p2", "EUR"))
    alice, lender = ledger.accounts["alice"], ledger.accounts["lender"]
    assert (alice.balance, alice.available, alice.debits_pending) == (700, 700, 0)
    assert (lender.balance, lender.credits_pending) == (300, 0)
    assert ledger.stored["p2-void"].amount == 400
    assert net_by_currency(ledger.accounts.values())["EUR"] == (0, 0)


def test_a_partial_post_releases_the_rest_and_a_post_above_the_reservation_is_refused() -> None:
    ledger = Ledger()
    ledger.submit(
        move("d1", "world", "alice", 1_000), move("p1", "alice", "lender", 300, phase=Phase.PENDING)
    )
    [too_much] = ledger.submit(Transfer.post("x", "p1", "EUR", amount=301))
    assert isinstance(too_much.error, PostExceedsPendingError)
    ledger.submit(Transfer.post("y", "p1", "EUR", amount=120))
    assert ledger.accounts["alice"].balance == 880 and ledger.accounts["alice"].debits_pending == 0


def test_a_pending_transfer_is_resolved_once() -> None:
    ledger = Ledger()
    ledger.submit(
        move("d1", "world", "alice", 1_000), move("p1", "alice", "lender", 300, phase=Phase.PENDING)
    )
    ledger.submit(Transfer.post("post", "p1", "EUR"))
    [again] = ledger.submit(Transfer.void("void", "p1", "EUR"))
    assert isinstance(again.error, PendingTransferResolvedError) and again.error.record == "p1"
    [replay] = ledger.submit(Transfer.post("post", "p1", "EUR"))
    assert replay.outcome is Outcome.EXISTS


def test_an_expired_reservation_cannot_be_posted_but_can_be_voided() -> None:
    ledger = Ledger()
    ledger.submit(
        move("d1", "world", "alice", 1_000),
        move("p1", "alice", "lender", 300, phase=Phase.PENDING, timeout_us=5_000_000),
    )
    ledger.now += 5_000_000
    [late] = ledger.submit(Transfer.post("post", "p1", "EUR"))
    assert isinstance(late.error, PendingTransferExpiredError)
    [void] = ledger.submit(Transfer.void("void", "p1", "EUR"))
    assert void.ok and ledger.accounts["alice"].available == 1_000


@pytest.mark.parametrize(
    ("transfer", "error"),
    [
        (move("x", "world", "nobody", 1), UnknownAccountError),
        (move("x", "world", "usd-world", 1), AccountCurrencyError),
        (move("x", "alice", "alice", 1), InvalidTransferError),
        (move("x", "world", "alice", 0), InvalidTransferError),
        (move("x", "world", "alice", -5), InvalidTransferError),
    ],
)
def test_malformed_transfers_are_refused_with_their_own_error(transfer: Transfer, error: type) -> None:
    ledger = Ledger()
    [result] = ledger.submit(transfer)
    assert isinstance(result.error, error)
    assert net_by_currency(ledger.accounts.values())["EUR"] == (0, 0)
    assert ledger.stored == {}


def test_an_account_proposed_to_a_batch_is_opened_only_when_an_applied_transfer_uses_it() -> None:
    ledger = Ledger()
    carol = Account("carol", "EUR", AccountKind.INVESTOR_CASH, debits_must_not_exceed_credits=True)
    dave = Account("dave", "EUR", AccountKind.INVESTOR_CASH, debits_must_not_exceed_credits=True)
    [refused] = ledger.submit(move("w", "dave", "world", 1), proposed=(dave,))
    assert isinstance(refused.error, OverdraftError) and "dave" not in ledger.accounts
    [done] = ledger.submit(move("d", "world", "carol", 5), proposed=(carol, dave))
    assert done.ok and ledger.accounts["carol"].balance == 5 and "dave" not in ledger.accounts


def test_an_account_a_reservation_opens_and_voids_in_one_batch_is_still_opened() -> None:
    ledger = Ledger()
    carol = Account("carol", "EUR", AccountKind.INVESTOR_CASH, debits_must_not_exceed_credits=True)
    results = ledger.submit(
        move("p", "world", "carol", 5, phase=Phase.PENDING), Transfer.void("v", "p", "EUR"), proposed=(carol,)
    )
    assert all(r.ok for r in results)
    assert ledger.accounts["carol"].balance == 0  # the stored transfers name it: it exists


def test_no_amount_or_running_total_goes_past_64_bits() -> None:
    ledger = Ledger()
    [too_big] = ledger.submit(move("x", "world", "alice", MAX_AMOUNT + 1))
    assert isinstance(too_big.error, InvalidTransferError) and too_big.error.field == "amount"
    [first] = ledger.submit(move("a", "world", "alice", MAX_AMOUNT))
    assert first.ok
    [second] = ledger.submit(move("b", "world", "bob", 1))
    assert isinstance(second.error, AmountOverflowError) and second.error.record == "world"
    assert ledger.accounts["bob"].balance == 0 and "b" not in ledger.stored


def test_a_refused_transfer_in_a_chain_takes_back_the_posts_and_voids_before_it() -> None:
    ledger = Ledger()
    ledger.submit(move("d", "world", "alice", 1_000), move("p", "alice", "lender", 600, phase=Phase.PENDING))
    results = ledger.submit(
        Transfer.void("v", "p", "EUR", linked=True),
        move("w", "alice", "world", 1_001),  # more than the void released: the chain fails
    )
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.FAILED]
    assert ledger.accounts["alice"].available == 400 and "v" not in ledger.stored
    [again] = ledger.submit(Transfer.void("v", "p", "EUR"))
    assert again.ok and ledger.accounts["alice"].available == 1_000


ACCOUNT_IDS = ["world", "alice", "bob", "lender", "usd-world", "nobody"]


def model(transfers: list[Transfer]) -> tuple[list[Outcome], dict[str, int]]:
    """A slow, obvious model of single transfers in linked chains: what the rule must do."""
    defined = accounts()
    balance = {a: 0 for a in defined}
    debits = {a: 0 for a in defined}
    stored: dict[str, Transfer] = {}
    outcomes: list[Outcome] = []
    chain: list[Transfer] = []
    for t in transfers:
        chain.append(t)
        if t.linked and t is not transfers[-1]:
            continue
        saved = (dict(balance), dict(debits), dict(stored))
        results: list[Outcome] = []
        failed = chain[-1].linked
        for c in chain:
            if failed:
                break
            if c.id in stored:
                same = (stored[c.id].debit_account_id, stored[c.id].credit_account_id, stored[c.id].amount)
                failed = same != (c.debit_account_id, c.credit_account_id, c.amount)
                results.append(Outcome.EXISTS)
                continue
            d, cr = defined.get(c.debit_account_id or ""), defined.get(c.credit_account_id or "")
            if d is None or cr is None or d is cr or d.currency != c.currency or cr.currency != c.currency:
                failed = True
                continue
            assert c.amount is not None
            if c.amount < 1 or (d.debits_must_not_exceed_credits and balance[d.id] < c.amount):
                failed = True
                continue
            balance[d.id] -= c.amount
            balance[cr.id] += c.amount
            stored[c.id] = c
            results.append(Outcome.CREATED)
        if failed:
            balance, debits, stored = saved
            outcomes += [Outcome.FAILED] * len(chain)
        else:
            outcomes += results
        chain = []
    return outcomes, balance


transfer_strategy = st.builds(
    lambda n, d, c, amount, linked: Transfer(f"t{n}", d, c, amount, "EUR", linked=linked),
    st.integers(0, 12),
    st.sampled_from(ACCOUNT_IDS),
    st.sampled_from(ACCOUNT_IDS),
    st.integers(-1, 3_000),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(transfer_strategy, max_size=30))
def test_the_rule_agrees_with_a_simple_model_of_single_and_linked_transfers(
    transfers: list[Transfer],
) -> None:
    ledger = Ledger()
    results = ledger.submit(*transfers) if transfers else []
    outcomes, balance = model(transfers)
    assert [r.outcome for r in results] == outcomes
    assert {a: acc.balance for a, acc in ledger.accounts.items()} == balance
    assert net_by_currency(ledger.accounts.values()) == {"EUR": (0, 0), "USD": (0, 0)}
