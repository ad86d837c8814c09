from __future__ import annotations

from decimal import Decimal

import pytest
from markets import Harness
from trading_examples import RISKY, SAFE, example_draft
from trading_market import offers

from tranche.matching import LoanFunded, OfferMatched
from tranche.trading import (
    BucketDraft,
    InvalidPortfolioError,
    PortfolioChanged,
    PortfolioClosedError,
    PortfolioDraft,
    PortfolioStatus,
)


def market() -> Harness:
    return Harness()


def test_a_new_portfolio_issues_its_first_tranche_as_buy_offers_traceable_to_it() -> None:
    m = market()
    portfolio = m.trading.create("inv_1", example_draft())
    offers = m.trading.plan(portfolio.portfolio_id)
    assert sorted(o.amount for o in offers) == [250_000, 750_000]
    assert {(o.portfolio_id, o.cycle) for o in offers} == {(portfolio.portfolio_id, 1)}
    assert {o.criteria for o in offers} == {SAFE, RISKY}
    assert m.trading.get(portfolio.portfolio_id).cycle == 1


def test_an_invalid_draft_is_rejected_naming_the_field() -> None:
    m = market()
    draft = example_draft()
    bad = PortfolioDraft(
        draft.currency,
        draft.total,
        draft.max_per_loan,
        draft.min_ticket,
        (BucketDraft("only", Decimal(90), SAFE),),
    )
    with pytest.raises(InvalidPortfolioError) as error:
        m.trading.create("inv_1", bad)
    assert error.value.field == "buckets.weight"


def test_loans_bought_show_in_the_composition_and_the_next_cycle_follows_a_filled_tranche() -> None:
    m = market()
    portfolio = m.trading.create("inv_1", example_draft(total=1_000_000))
    m.rebalance()
    m.offer(*offers(400))
    view = m.trading.view(portfolio.portfolio_id)
    assert view.invested > 0
    assert m.trading.get(portfolio.portfolio_id).cycle > 1
    assert [b.target_percent for b in view.buckets] == [Decimal(75), Decimal(25)]
    assert any(isinstance(e, LoanFunded) for e in m.events)


def test_every_bid_the_market_places_is_confirmed_once_the_ledger_reserved_it() -> None:
    m = market()
    m.trading.create("inv_1", example_draft(total=1_000_000))
    m.rebalance()
    m.offer(*offers(50))
    placed = {bid.bid_id for e in m.events if isinstance(e, OfferMatched) for bid in e.bids}
    funded = {b for e in m.events if isinstance(e, LoanFunded) for b in e.bid_ids}
    assert placed and placed == funded == set(m.book.posted)


def test_pausing_withdraws_the_open_offers_and_the_portfolio_buys_nothing_more() -> None:
    m = market()
    portfolio = m.trading.create("inv_1", example_draft(total=1_000_000))
    m.rebalance()
    m.offer(*offers(50))
    invested = m.trading.view(portfolio.portfolio_id).invested
    m.trading.pause(portfolio.portfolio_id)
    m.changed(portfolio.portfolio_id, "paused")
    assert m.market.matching.buys_of("inv_1", "EUR") == []
    m.offer(*offers(100, seed=8))
    view = m.trading.view(portfolio.portfolio_id)
    assert (view.portfolio.status, view.invested, view.wanted) == (PortfolioStatus.PAUSED, invested, 0)
    assert view.state == "paused"


def test_a_closed_portfolio_cannot_be_changed() -> None:
    m = market()
    portfolio = m.trading.create("inv_1", example_draft())
    m.trading.close(portfolio.portfolio_id)
    with pytest.raises(PortfolioClosedError):
        m.trading.update(portfolio.portfolio_id, example_draft())


def test_editing_a_portfolio_keeps_bucket_ids_by_name_and_bumps_the_version() -> None:
    m = market()
    portfolio = m.trading.create("inv_1", example_draft())
    m.rebalance()
    first = set(m.market.matching.buys_of("inv_1", "EUR"))
    assert len(first) == 2
    edited = m.trading.update(portfolio.portfolio_id, example_draft(total=20_000_000))
    assert edited.version == 2
    assert [b.bucket_id for b in edited.buckets] == [b.bucket_id for b in portfolio.buckets]
    m.changed(portfolio.portfolio_id, "edited")
    now = set(m.market.matching.buys_of("inv_1", "EUR"))
    assert now and not now & first  # the demand made under the old terms is gone, the new terms' is placed


def test_every_change_of_terms_or_status_is_announced_for_the_market() -> None:
    m = market()
    portfolio = m.trading.create("inv_1", example_draft())
    m.trading.update(portfolio.portfolio_id, example_draft(total=20_000_000))
    m.trading.pause(portfolio.portfolio_id)
    m.trading.resume(portfolio.portfolio_id)
    m.trading.close(portfolio.portfolio_id)
    announced = m.trading.store.announced  # type: ignore[attr-defined]
    assert [(c.change, c.version, c.status) for c in announced] == [
        ("created", 1, "active"),
        ("edited", 2, "active"),
        ("paused", 2, "paused"),
        ("resumed", 2, "active"),
        ("closed", 2, "closed"),
    ]
    assert all(isinstance(c, PortfolioChanged) for c in announced)


def test_after_a_restart_offers_trading_issued_but_the_matcher_never_got_are_handed_over_once() -> None:
    m = market()
    portfolio = m.trading.create("inv_1", example_draft(total=1_000_000))
    issued = m.trading.plan(portfolio.portfolio_id)  # the process stops before the matcher hears of them
    matcher = m.market.matching.matcher
    assert matcher.open_buy_ids() == []
    m.market.resync()
    assert sorted(matcher.open_buy_ids()) == sorted(o.buy_offer_id for o in issued)
    m.market.resync()  # a second time changes nothing
    assert len(matcher.open_buy_ids()) == len(issued)
