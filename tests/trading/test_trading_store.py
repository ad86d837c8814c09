"""Every backend of the portfolio store passes the same contract."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine
from trading_examples import example_portfolio

from tranche.trading import (
    FillRow,
    InMemoryPortfolioStore,
    OfferRow,
    PortfolioChanged,
    PortfolioNotFoundError,
    PortfolioStatus,
    PortfolioStore,
    SqlPortfolioStore,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CREATED = PortfolioChanged("pf_1", "inv_1", "EUR", 1, "active", "created")
PAUSED = PortfolioChanged("pf_1", "inv_1", "EUR", 2, "paused", "paused")


class PortfolioStoreContract:
    def test_a_portfolio_reads_back_as_it_was_stored(self, store: PortfolioStore) -> None:
        portfolio = example_portfolio()
        store.add(portfolio, NOW, CREATED)
        assert store.get("pf_1") == portfolio
        assert store.list_for("inv_1") == [portfolio]
        assert store.list_for("someone else") == []
        assert store.active_ids() == ["pf_1"]

    def test_a_replaced_portfolio_reads_back_with_its_new_terms(self, store: PortfolioStore) -> None:
        store.add(example_portfolio(), NOW, CREATED)
        paused = replace(example_portfolio(), status=PortfolioStatus.PAUSED, cycle=3, version=2)
        store.replace(paused, NOW, PAUSED)
        assert store.get("pf_1") == paused
        assert store.active_ids() == []

    def test_a_new_cycle_changes_the_cycle_alone(self, store: PortfolioStore) -> None:
        store.add(example_portfolio(), NOW, CREATED)
        stale = store.get("pf_1")
        edited = replace(stale, total=5_000_000, version=2)
        store.replace(edited, NOW, PAUSED)
        store.advance_cycle("pf_1", 4, NOW)  # the gap analyzer read the portfolio before the edit
        assert store.get("pf_1") == replace(edited, cycle=4)

    def test_an_investors_active_portfolios_are_found_per_currency(self, store: PortfolioStore) -> None:
        store.add(example_portfolio(), NOW, CREATED)
        store.add(example_portfolio(portfolio_id="pf_2", currency="PLN"), NOW, CREATED)
        assert store.active_of("inv_1", "EUR") == ["pf_1"]
        assert store.active_of("inv_1", "PLN") == ["pf_2"]
        assert store.active_of("inv_2", "EUR") == []

    def test_an_unknown_portfolio_is_not_found(self, store: PortfolioStore) -> None:
        with pytest.raises(PortfolioNotFoundError):
            store.get("pf_nope")

    def test_offers_and_fills_are_traceable_to_portfolio_bucket_and_cycle(
        self, store: PortfolioStore
    ) -> None:
        store.add(example_portfolio(), NOW, CREATED)
        store.add_offers(
            [
                OfferRow("bo_1", "pf_1", 1, "safe", 1, 750_000),
                OfferRow("bo_2", "pf_1", 1, "risky", 1, 250_000),
            ],
            NOW,
        )
        store.add_fills(
            [
                FillRow("bid_1", "bo_1", "pf_1", "safe", 10_000),
                FillRow("bid_2", "bo_2", "pf_1", "risky", 5_000),
            ]
        )
        store.add_fills([FillRow("bid_1", "bo_1", "pf_1", "safe", 10_000)])  # redelivered: recorded once
        assert len(store.fills("pf_1")) == 2
        assert set(store.owners(["bo_1", "bo_x"])) == {"bo_1"}
        assert store.set_fill_status(["bid_1"], "confirmed") == {"pf_1"}
        store.set_fill_status(["bid_2"], "rolled_back")
        store.set_offer_status(["bo_2"], "withdrawn")
        offers = {o.buy_offer_id: o for o in store.offers("pf_1")}
        assert (offers["bo_1"].cycle, offers["bo_1"].bucket_id, offers["bo_2"].status) == (
            1,
            "safe",
            "withdrawn",
        )
        fills = {f.bid_id: f.status for f in store.fills("pf_1")}
        assert fills == {"bid_1": "confirmed", "bid_2": "rolled_back"}


class TestInMemoryPortfolioStore(PortfolioStoreContract):
    @pytest.fixture
    def store(self) -> PortfolioStore:
        return InMemoryPortfolioStore()


class TestSqlPortfolioStore(PortfolioStoreContract):
    @pytest.fixture
    def store(self, engine: Engine) -> PortfolioStore:
        return SqlPortfolioStore(engine, lambda conn, event: None)

    def test_a_change_is_announced_in_the_transaction_that_stores_it(self, engine: Engine) -> None:
        announced: list[object] = []

        def publish(conn: object, event: object) -> None:
            announced.append(event)
            raise RuntimeError("the outbox is full")

        store = SqlPortfolioStore(engine, publish)
        with pytest.raises(RuntimeError):
            store.add(example_portfolio(), NOW, CREATED)
        assert announced == [CREATED]
        with pytest.raises(PortfolioNotFoundError):
            store.get("pf_1")  # the portfolio was not stored without its announcement
