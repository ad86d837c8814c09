"""The whole buy side on the store: after a restart the matcher's books are rebuilt to the same state and
go on exactly as the books that were never stopped."""

from __future__ import annotations

import copy
import random

from sqlalchemy import Engine
from trading_examples import example_draft
from trading_market import competitors, offers

from tranche.matching.adapters import SqlMatchingRecord
from tranche.matching.book import Matcher
from tranche.matching.record import InMemoryMatchingRecord
from tranche.matching.service import MatchingService
from tranche.shared.clock import ManualClock
from tranche.trading.adapters import SqlPortfolioStore
from tranche.trading.handlers import Marketplace
from tranche.trading.service import TradingService


def test_after_a_restart_the_books_are_the_same_and_go_on_the_same(engine: Engine) -> None:
    trading = TradingService(SqlPortfolioStore(engine), ManualClock())
    market = Marketplace(trading, MatchingService(Matcher(), SqlMatchingRecord(engine)), settle=False)
    trading.create("inv_example", example_draft(total=500_000))
    for number, draft in enumerate(competitors(random.Random(5), 3)):
        trading.create(f"inv_{number}", draft)
    market.run()
    stream = offers(160, seed=21)
    for index, offer in enumerate(stream[:120]):
        market.offer_loan(offer)
        if index % 3 == 0:
            market.confirm(offer.offer_id)  # some matches settle, others stay unconfirmed

    restarted = MatchingService.rebuild(SqlMatchingRecord(engine))
    assert restarted.matcher.snapshot() == market.matching.matcher.snapshot()

    # the books that were never stopped (a copy, recording aside) and the restarted ones get the same loans
    twin = MatchingService(copy.deepcopy(market.matching.matcher), InMemoryMatchingRecord())
    for offer in stream[120:]:
        assert restarted.offer_loan(offer) == twin.offer_loan(offer)
    assert restarted.matcher.snapshot() == twin.matcher.snapshot()
