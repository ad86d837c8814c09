"""The whole buy side on the store: after a restart the matcher's books are rebuilt to the same state, go on
exactly as the books that were never stopped, and the bids the ledger had not answered for are settled."""

from __future__ import annotations

import contextlib
import copy
import random

from markets import Harness, check_invariants
from sqlalchemy import Engine
from trading_examples import example_draft
from trading_market import competitors, offers

from tranche.matching import InMemoryMatchingRecord, MatchingService, SqlMatchingRecord
from tranche.trading import Cashbook, LedgerUnavailableError, Market, SqlPortfolioStore


def _no_outbox(conn: object, event: object) -> None:
    """The outbox is not what these tests look at."""


def market_on(engine: Engine, book: Cashbook) -> Harness:
    return Harness(book, store=SqlPortfolioStore(engine, _no_outbox), record=SqlMatchingRecord(engine))


def test_after_a_restart_the_books_are_the_same_and_go_on_the_same(engine: Engine) -> None:
    book = Cashbook()
    h = market_on(engine, book)
    h.trading.create("inv_example", example_draft(total=500_000))
    for number, draft in enumerate(competitors(random.Random(5), 3)):
        h.trading.create(f"inv_{number}", draft)
    h.rebalance()
    stream = offers(160, seed=21)
    for index, offer in enumerate(stream[:120]):
        # the ledger misses some steps (the last ones too): their bids stay placed, unconfirmed
        book.down = index % 3 == 0 or index >= 110
        with contextlib.suppress(LedgerUnavailableError):
            h.offer(offer)
    book.down = False
    assert h.market.matching.unsettled()

    restarted = MatchingService.rebuild(SqlMatchingRecord(engine))
    assert restarted.matcher.snapshot() == h.market.matching.matcher.snapshot()

    # the books that were never stopped (a copy, recording aside) and the restarted ones get the same loans
    twin = MatchingService(copy.deepcopy(h.market.matching.matcher), InMemoryMatchingRecord())
    for offer in stream[120:]:
        assert restarted.offer_loan(offer) == twin.offer_loan(offer)
    assert restarted.matcher.snapshot() == twin.matcher.snapshot()


def test_a_restarted_market_settles_the_bids_the_ledger_had_not_answered_for(engine: Engine) -> None:
    book = Cashbook()
    h = market_on(engine, book)
    for number, draft in enumerate(competitors(random.Random(9), 4)):
        h.trading.create(f"inv_{number}", draft)
    h.rebalance()
    h.offer(*offers(40, seed=3))
    book.down = True
    for offer in offers(30, seed=4):
        with contextlib.suppress(LedgerUnavailableError):
            h.offer(offer)
    book.down = False
    assert h.market.matching.unsettled()

    h.market = Market(
        h.trading, MatchingService.rebuild(SqlMatchingRecord(engine)), book
    )  # the process restarts
    h.events += book_seen(book, h.market.resync())
    check_invariants(h)


def book_seen(book: Cashbook, events: list) -> list:
    book.apply(events)
    return events
