"""The durable record of the matcher, on every backend: a rebuild from it equals the live books."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import pytest
from matching_factories import buy, sell
from sqlalchemy import Engine

from tranche.matching import (
    Changes,
    Criteria,
    InMemoryMatchingRecord,
    Matcher,
    MatchEvent,
    MatchingRecord,
    MatchingService,
    OfferMatched,
    SqlMatchingRecord,
)
from tranche.matching.errors import OfferWithdrawnError


def confirm(service: MatchingService, offer_id: str) -> None:
    """The ledger reserved every bid placed on the offer."""
    matches = [m for m in service.unsettled() if m.sell_offer_id == offer_id]
    service.settle(matches, {b.bid_id for m in matches for b in m.bids}, {})


def trade(service: MatchingService) -> None:
    service.place_buys(
        [
            buy(amount=70_000, offer_id="b1", portfolio="p1", criteria=Criteria(countries=frozenset({"ES"}))),
            buy(amount=20_000, offer_id="b2", portfolio="p2", cap=5_000),
            buy(
                amount=90_000,
                offer_id="b3",
                portfolio="p3",
                criteria=Criteria(min_investor_rate=Decimal("0.09")),
            ),
        ]
    )
    service.offer_loan(sell(amount=30_000, offer_id="s1"))
    confirm(service, "s1")
    service.offer_loan(sell(amount=100_000, aon=True, offer_id="aon"))
    service.offer_loan(sell(amount=80_000, offer_id="s2", country="LV", rate="0.12"))
    service.withdraw_buys(["b2"], "portfolio edited")
    service.offer_loan(sell(amount=10_000, offer_id="s3"))
    service.replace_loan("len_1", service.matcher._sells["s3"].offer.loan_id, None, "repaid")


class RecordContract:
    """Every backend of the matching record passes these; subclasses provide the ``record`` fixture."""

    def test_books_rebuilt_from_the_record_after_a_restart_equal_the_live_books(
        self, record: MatchingRecord
    ) -> None:
        live = MatchingService(Matcher(), record)
        trade(live)
        restarted = MatchingService.rebuild(record)
        assert restarted.matcher.snapshot() == live.matcher.snapshot()

    def test_the_rebuilt_books_go_on_matching_as_the_live_ones_would(self, record: MatchingRecord) -> None:
        live = MatchingService(Matcher(), record)
        trade(live)
        restarted = MatchingService.rebuild(record)
        twin = MatchingService(Matcher.restore(record.load()), InMemoryMatchingRecord())
        late = sell(amount=40_000, offer_id="late", country="ES")
        events = restarted.offer_loan(late)
        assert events == twin.offer_loan(late)
        assert [e for e in events if isinstance(e, OfferMatched)]
        assert MatchingService.rebuild(record).matcher.snapshot() == restarted.matcher.snapshot()

    def test_a_redelivered_offer_changes_nothing_and_a_withdrawn_one_is_refused_after_a_restart(
        self, record: MatchingRecord
    ) -> None:
        live = MatchingService(Matcher(), record)
        trade(live)
        restarted = MatchingService.rebuild(record)
        before = restarted.matcher.snapshot()
        assert restarted.offer_loan(sell(amount=30_000, offer_id="s1")) == []
        assert restarted.place_buys([buy(amount=70_000, offer_id="b1")]) == []
        assert restarted.matcher.snapshot() == before
        with pytest.raises(OfferWithdrawnError):
            restarted.offer_loan(sell(amount=10_000, offer_id="s3"))


class FailingRecord(InMemoryMatchingRecord):
    """Fails the next save, as a database that went away would."""

    fail = False

    def save(self, changes: Changes, events: Sequence[MatchEvent]) -> None:
        if self.fail:
            self.fail = False
            raise ConnectionError("the database went away")
        super().save(changes, events)


def test_when_the_record_cannot_be_written_the_books_go_back_to_what_it_holds() -> None:
    record = FailingRecord()
    service = MatchingService(Matcher(), record)
    trade(service)
    before = service.matcher.snapshot()
    record.fail = True
    with pytest.raises(ConnectionError):
        service.offer_loan(sell(amount=40_000, offer_id="lost", country="ES"))
    assert service.matcher.snapshot() == before
    assert [e for e in service.offer_loan(sell(amount=40_000, offer_id="lost", country="ES"))]


class TestInMemoryMatchingRecord(RecordContract):
    @pytest.fixture
    def record(self) -> MatchingRecord:
        return InMemoryMatchingRecord()


class TestSqlMatchingRecord(RecordContract):
    @pytest.fixture
    def record(self, engine: Engine) -> MatchingRecord:
        return SqlMatchingRecord(engine)
