"""The market role's handlers: what moves the books and the gap analyzer.

- ``loan.<lender>.assessed``: the assessed loan versions are offered, each replacing the loan's live offer (and
  rolling back that offer's unconfirmed bids); a version that cannot be offered is refused alone, with the
  reason (``match.<lender>.refused``), and its neighbours are offered;
- ``loan.<lender>.withdrawn|repaid|defaulted|written_off``: the loans are taken off the market at once;
- ``portfolio.<id>.changed`` (from any API process): the portfolio's old demand is withdrawn and it plans anew;
- ``portfolio.<id>.drifted`` (from the ledger, once per window): its holdings moved, so the gap analyzer runs;
- ``investor.<id>.cash`` (from the ledger): the investor's available cash changed, so its portfolios plan again
  within it (a portfolio waiting for cash resumes).

Each handler is a plain function of the event and its dependencies (bound in :func:`tranche.bootstrap.bootstrap`)
and is idempotent: the same event again changes nothing the books do not already hold.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Engine

from tranche.crm import lender_config_of
from tranche.intake import LoansAssessed, LoansLeftActive, load_versions
from tranche.ledger import CashAvailable, PortfolioDrifted
from tranche.matching import (
    InvalidOfferError,
    MarginSchedule,
    OffersRefused,
    RefusedOffer,
    RetainedShares,
    SellOffer,
    confirmed_amounts,
    record_refusals,
    sell_offer_for,
)
from tranche.shared.clock import Clock
from tranche.shared.messages import Handlers
from tranche.store.engine import reading
from tranche.trading.events import PortfolioChanged
from tranche.trading.market import Market

LOT = 100  # minor units: offers are whole multiples, so that no dust is left that no ticket can buy
Publish = Callable[[Connection, object], None]


def offer_assessed_loans(
    event: LoansAssessed, market: Market, engine: Engine, publish: Publish, clock: Clock
) -> None:
    """Offer the assessed versions (what investors already own of a loan is not sold again), then let every
    portfolio buy."""
    keys = [(a.loan_id, a.version) for a in event.loans]
    groups = {(a.loan_id, a.version): a.risk_group for a in event.loans}
    with reading(engine) as conn:
        loans = load_versions(conn, event.lender_id, keys)
        sold = confirmed_amounts(conn, event.lender_id, [loan_id for loan_id, _ in keys])
        _version, config = lender_config_of(conn, event.lender_id)
    margins = MarginSchedule(per_lender={event.lender_id: config.margin})
    retained = RetainedShares(per_lender={event.lender_id: config.retained_share})
    offers: list[tuple[str, SellOffer | None]] = []
    refused: list[RefusedOffer] = []
    for loan, version in loans:
        try:
            offer = sell_offer_for(
                loan,
                version,
                groups[(loan.loan_id, version)],
                margins,
                retained,
                LOT,
                sold.get(loan.loan_id, 0),
            )
        except InvalidOfferError as error:
            refused.append(RefusedOffer(loan.loan_id, version, error.field or "", error.message))
            offer = None  # the loan's older version is not for sale either: it changed
        offers.append((loan.loan_id, offer))
    if refused:
        event_out = OffersRefused(event.lender_id, event.batch_id, tuple(refused))
        with engine.begin() as conn:
            if record_refusals(conn, event_out, clock.now()):
                publish(conn, event_out)
    market.offer_loans(event.lender_id, offers)


def take_loans_off(event: LoansLeftActive, market: Market) -> None:
    """Loans that left ``active`` are never sold again."""
    market.take_off(event.lender_id, [key.loan_id for key in event.loans], event.status)


def apply_portfolio_change(event: PortfolioChanged, market: Market) -> None:
    market.portfolio_changed(event.portfolio_id, event.change)


def rebalance_drifted(event: PortfolioDrifted, market: Market) -> None:
    """Repayments, write-offs or fundings moved what the portfolio holds: the money that came back is put to
    work again (within the investor's cash and what it keeps uninvested)."""
    market.rebalance([event.portfolio_id])


def put_cash_to_work(event: CashAvailable, market: Market) -> None:
    """The investor's available cash changed: its portfolios in that currency plan again within it."""
    market.cash_changed(event.investor_id, event.currency)


HANDLERS: Handlers = {
    LoansAssessed: [offer_assessed_loans],
    LoansLeftActive: [take_loans_off],
    PortfolioChanged: [apply_portfolio_change],
    PortfolioDrifted: [rebalance_drifted],
    CashAvailable: [put_cash_to_work],
}
