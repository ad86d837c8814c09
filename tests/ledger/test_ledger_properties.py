"""Invariants of the ledger under any sequence of flows, on SQLite and PostgreSQL.

For any sequence of deposits, matches (reservations), fundings (posts), roll-backs (voids), repayments,
withdrawals and replays of earlier successful steps: every flagged balance stays within its rule, every
currency sums to zero, and a replay changes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import count
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from tranche.ledger import LedgerError, LedgerService, LoanVersion, Payment, SqlLedgerStore
from tranche.matching import Bid, BidsRolledBack, LoanFunded, OfferMatched
from tranche.shared.clock import ManualClock
from tranche.shared.money import Money

_examples = count()
INVESTORS = ("ann", "ben", "cy")
LOAN_PRINCIPAL = 100_000

steps = st.lists(
    st.one_of(
        st.tuples(st.just("deposit"), st.sampled_from(INVESTORS), st.integers(1, 200_000)),
        st.tuples(st.just("withdraw"), st.sampled_from(INVESTORS), st.integers(1, 150_000)),
        st.tuples(
            st.just("match"),
            st.integers(0, 1),
            st.lists(st.tuples(st.sampled_from(INVESTORS), st.integers(1, 30_000)), min_size=1, max_size=3),
        ),
        st.tuples(st.just("fund"), st.integers(0, 1), st.integers(0, 7)),
        st.tuples(st.just("roll_back"), st.integers(0, 1), st.integers(0, 7)),
        st.tuples(
            st.just("repay"),
            st.integers(0, 1),
            st.integers(0, 40_000),
            st.integers(0, 3_000),
            st.sampled_from(["active", "active", "repaid", "written_off"]),
        ),
        st.tuples(st.just("replay"), st.integers(0, 1000)),
    ),
    min_size=3,
    max_size=25,
)


@dataclass
class World:
    """What one example has done, so that later steps can refer to it."""

    prefix: str
    bids: list[list[str]] = field(default_factory=lambda: [[], []])  # reserved, not yet funded or rolled back
    reserved: list[int] = field(default_factory=lambda: [0, 0])
    outstanding: list[int] = field(default_factory=lambda: [LOAN_PRINCIPAL, LOAN_PRINCIPAL])
    version: list[int] = field(default_factory=lambda: [1, 1])
    closed: list[bool] = field(default_factory=lambda: [False, False])
    done: list[tuple[str, Any]] = field(default_factory=list)
    serial: count[int] = field(default_factory=count)


def all_accounts(engine: Engine) -> dict[str, tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT id, debits_must_not_exceed_credits, credits_must_not_exceed_debits, debits_pending, "
            "debits_posted, credits_pending, credits_posted FROM ledger_accounts"
        ).all()
    return {row[0]: tuple(row) for row in rows}


def check_invariants(service: LedgerService, engine: Engine) -> None:
    for account_id, debits_flag, credits_flag, dp, dd, cp, cd in all_accounts(engine).values():
        if debits_flag:
            assert dp + dd <= cd, account_id
        if credits_flag:
            assert cp + cd <= dd, account_id
    assert all(net == (0, 0) for net in service.store.net_by_currency().values())


def run(service: LedgerService, world: World, step: tuple[Any, ...]) -> tuple[str, Any] | None:
    """Perform one step; returns a replayable action when the step fully succeeded."""
    kind = step[0]
    p = world.prefix
    if kind in ("deposit", "withdraw"):
        _, investor, amount = step
        key = f"{p}{next(world.serial)}"
        action: tuple[str, Any] = (kind, (f"{p}{investor}", Money(amount, "EUR"), key))
        try:
            perform(service, action)
        except LedgerError:
            return None
        return action
    if kind == "match":
        _, index, wanted = step
        if world.closed[index]:
            return None
        bids = []
        for investor, amount in wanted:
            if world.reserved[index] + amount > LOAN_PRINCIPAL:
                break
            bid_id = f"{p}bid{next(world.serial)}"
            world.reserved[index] += amount
            rate = Decimal("0.08")
            bids.append(
                Bid(
                    bid_id,
                    "buy",
                    f"pf-{investor}",
                    f"{p}{investor}",
                    amount,
                    rate,
                    Decimal("0.1"),
                    Decimal("0.02"),
                )
            )
        if not bids:
            return None
        event = OfferMatched(
            f"{p}m", "lender", f"{p}L{index}", world.version[index], "EUR", False, tuple(bids)
        )
        answer = service.reserve([event])
        for b in bids:
            if b.bid_id in answer.reserved:
                world.bids[index].append(b.bid_id)
            else:
                world.reserved[index] -= b.amount
        return ("event", event) if not answer.refused else None
    if kind in ("fund", "roll_back"):
        _, index, mask = step
        chosen = tuple(b for i, b in enumerate(world.bids[index]) if mask >> (i % 3) & 1) or tuple(
            world.bids[index]
        )
        if not chosen:
            return None
        world.bids[index] = [b for b in world.bids[index] if b not in chosen]
        loan_id = f"{p}L{index}"
        event2: LoanFunded | BidsRolledBack = (
            LoanFunded("lender", loan_id, world.version[index], "EUR", chosen)
            if kind == "fund"
            else BidsRolledBack("lender", loan_id, "test", chosen)
        )
        outcome = (
            service.fund(event2)  # type: ignore[arg-type]
            if kind == "fund"
            else service.roll_back(event2)  # type: ignore[arg-type]
        )
        return ("event", event2) if not outcome.refused else None
    if kind == "repay":
        _, index, principal, interest, status = step
        if world.closed[index]:
            return None
        principal = min(principal, world.outstanding[index])
        world.outstanding[index] -= principal
        if status == "repaid":
            principal += world.outstanding[index]
            world.outstanding[index] = 0
        world.version[index] += 1
        world.closed[index] = status != "active"
        loan = LoanVersion(
            "lender",
            f"{p}L{index}",
            world.version[index],
            "EUR",
            status,
            world.outstanding[index],
            (Payment(principal, interest),),
        )
        action = ("settle", (loan,))
        perform(service, action)
        return action
    # replay an earlier successful step
    if not world.done:
        return None
    action = world.done[step[1] % len(world.done)]
    engine = service.store.engine  # type: ignore[attr-defined]
    before = all_accounts(engine)
    perform(service, action)
    assert all_accounts(engine) == before, f"replaying {action} changed balances"
    return None


def perform(service: LedgerService, action: tuple[str, Any]) -> None:
    kind, payload = action
    if kind == "deposit":
        service.deposit(*payload)
    elif kind == "withdraw":
        service.withdraw(*payload)
    elif kind == "settle":
        service.settle_loan(*payload)
    elif isinstance(payload, OfferMatched):
        service.reserve([payload])
    elif isinstance(payload, LoanFunded):
        service.fund(payload)
    else:
        service.roll_back(payload)


def test_any_sequence_of_flows_keeps_balances_within_their_flags_sums_to_zero_and_replays_change_nothing(
    engine: Engine,
) -> None:
    service = LedgerService(SqlLedgerStore(engine, ManualClock()), ManualClock())
    examples = int(os.environ.get("LEDGER_EXAMPLES", 60 if engine.dialect.name == "sqlite" else 20))

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )
    @given(st.lists(st.integers(50_000, 200_000), min_size=3, max_size=3), steps)
    def scenario(opening: list[int], sequence: list[tuple[Any, ...]]) -> None:
        world = World(prefix=f"x{next(_examples)}-")
        first = [("deposit", investor, amount) for investor, amount in zip(INVESTORS, opening, strict=True)]
        for step in first + sequence:
            action = run(service, world, step)
            if action is not None:
                world.done.append(action)
            check_invariants(service, engine)

    scenario()
