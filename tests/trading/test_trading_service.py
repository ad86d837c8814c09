from __future__ import annotations

from decimal import Decimal

import pytest
from trading_examples import RISKY, SAFE, example_draft
from trading_market import offers

from tranche.matching.book import Matcher
from tranche.matching.events import BidsRolledBack, LoanFunded, OfferMatched
from tranche.matching.record import InMemoryMatchingRecord
from tranche.matching.service import MatchingService
from tranche.shared.clock import ManualClock
from tranche.trading.domain import PortfolioStatus
from tranche.trading.errors import InvalidPortfolioError, PortfolioClosedError
from tranche.trading.handlers import Marketplace
from tranche.trading.service import BucketDraft, PortfolioDraft, TradingService
from tranche.trading.store import InMemoryPortfolioStore


def market(settle: bool = True) -> Marketplace:
    trading = TradingService(InMemoryPortfolioStore(), ManualClock())
    return Marketplace(trading, MatchingService(Matcher(), InMemoryMatchingRecord()), settle=settle)


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
    m.run()
    for offer in offers(400):
        m.offer_loan(offer)
    view = m.trading.view(portfolio.portfolio_id)
    assert view.invested > 0
    assert m.trading.get(portfolio.portfolio_id).cycle > 1
    assert [b.target_percent for b in view.buckets] == [Decimal(75), Decimal(25)]
    assert any(isinstance(e, LoanFunded) for e in m.events)


def test_pausing_withdraws_the_open_offers_and_rolls_back_their_unconfirmed_bids() -> None:
    m = market(settle=False)
    portfolio = m.trading.create("inv_1", example_draft(total=1_000_000))
    m.run()
    for offer in offers(50):
        m.offer_loan(offer)
    placed = [e for e in m.events if isinstance(e, OfferMatched)]
    assert placed
    change = m.trading.pause(portfolio.portfolio_id)
    assert change.withdraw
    events = m.changed(change, "portfolio paused")
    rolled = {b for e in events if isinstance(e, BidsRolledBack) for b in e.bid_ids}
    assert rolled == {bid.bid_id for e in placed for bid in e.bids}
    view = m.trading.view(portfolio.portfolio_id)
    assert (view.portfolio.status, view.invested, view.wanted) == (PortfolioStatus.PAUSED, 0, 0)


def test_a_closed_portfolio_cannot_be_changed() -> None:
    m = market()
    portfolio = m.trading.create("inv_1", example_draft())
    m.trading.close(portfolio.portfolio_id)
    with pytest.raises(PortfolioClosedError):
        m.trading.update(portfolio.portfolio_id, example_draft())


def test_editing_a_portfolio_keeps_bucket_ids_by_name_and_bumps_the_version() -> None:
    m = market()
    portfolio = m.trading.create("inv_1", example_draft())
    m.run()
    change = m.trading.update(portfolio.portfolio_id, example_draft(total=20_000_000))
    assert change.portfolio.version == 2
    assert [b.bucket_id for b in change.portfolio.buckets] == [b.bucket_id for b in portfolio.buckets]
    assert len(change.withdraw) == 2


def test_after_a_restart_offers_trading_issued_but_the_matcher_never_got_are_handed_over_once() -> None:
    m = market()
    portfolio = m.trading.create("inv_1", example_draft(total=1_000_000))
    issued = m.trading.plan(portfolio.portfolio_id)  # the process stops before the matcher hears of them
    assert m.matching.matcher.open_buy_ids() == []
    m.resync()
    assert sorted(m.matching.matcher.open_buy_ids()) == sorted(o.buy_offer_id for o in issued)
    m.resync()  # a second time changes nothing
    assert len(m.matching.matcher.open_buy_ids()) == len(issued)
