"""What the ledger says to the rest of the market, and what it is asked.

The market reserves before it confirms: it sends the matches of one cycle as one :class:`ReserveBids` over the
bus's request/response (service ``ledger.reserve``, see :func:`tranche.ledger.request_reservations`) and confirms
only the bids the answer, :class:`BidsReserved`, lists as reserved. The ledger reserves all the bids of one
request in one transaction: each bid of a partial-funding match alone, all the bids of an all-or-nothing match
as one linked chain (all reserved or none). Asking again for a bid already reserved answers ``reserved`` and
changes nothing; a refused bid leaves nothing behind, so it may be asked for again once the investor has cash.

Events the ledger publishes through the outbox, in the transaction of the change they describe:

* :class:`CashAvailable` (``investor.<investor>.cash``): an investor's available cash moved outside a
  reservation (a deposit, a withdrawal, a repayment distributed, a reservation voided or expired). The market
  resumes the portfolios it held for want of cash.
* :class:`PortfolioDrifted` (``portfolio.<portfolio>.drifted``): settlement changed what a portfolio holds;
  folded per portfolio over a window so that a burst of fills makes one notification.

A statement is read from the ledger role over the bus's chunked response (service ``ledger.statement``, see
:func:`tranche.ledger.request_statement`): :class:`ReadStatement` asks, :class:`StatementPart` answers, part by
part.

Amounts are integer minor units of their currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from tranche.matching import OfferMatched
from tranche.shared.messages import Command, Event


@dataclass(frozen=True, slots=True)
class ReserveBids(Command):
    """Reserve the investors' cash for these matches (one request, one transaction).

    ``request_id`` is the caller's, echoed in the answer. Each bid's reservation is two pending transfers:
    the investor's cash to the lender's settlement account, and the loan's principal to the investor's holding.
    """

    queue: ClassVar[str] = "ledger.reserve"
    request_id: str
    matches: tuple[OfferMatched, ...]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why one bid was not reserved.

    ``code`` is one of:

    * ``insufficient_cash``: the investor's available cash in the loan's currency is below the bid;
    * ``all_or_nothing``: another bid of the same all-or-nothing match was refused, so none is reserved;
    * ``bid_closed``: the bid was reserved before and has since been rolled back or has expired (a bid id is
      reserved once; the market makes a new bid);
    * any other ledger error code (``invalid_transfer``, ``transfer_exists``, ...) for a malformed bid.

    ``message`` says it in words, naming the investor's cash and the amounts.
    """

    bid_id: str
    investor_id: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class CashPosition:
    """An investor's available cash in one currency (posted credits less posted and reserved debits)."""

    investor_id: str
    currency: str
    available: int


@dataclass(frozen=True, slots=True)
class BidsReserved:
    """The answer to :class:`ReserveBids`: the bids reserved (new or from an earlier request), the bids refused
    with the reason, and the available cash after the request of every investor (and currency) it named."""

    request_id: str
    reserved: tuple[str, ...]
    refused: tuple[Refusal, ...]
    cash: tuple[CashPosition, ...]


@dataclass(frozen=True, slots=True)
class CashAvailable(Event):
    """An investor's available cash in ``currency`` changed outside a reservation; ``available`` is the new
    figure, in minor units."""

    topic_template: ClassVar[str] = "investor.{investor_id}.cash"
    investor_id: str
    currency: str
    available: int


@dataclass(frozen=True, slots=True)
class PortfolioDrifted(Event):
    """The composition of a portfolio changed: ``loan_ids`` are the loans whose holdings moved, ``changes``
    how many settlement steps were folded into this one notification, between ``first_at`` and ``last_at``."""

    topic_template: ClassVar[str] = "portfolio.{portfolio_id}.drifted"
    portfolio_id: str
    investor_id: str
    loan_ids: tuple[str, ...]
    changes: int
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True, slots=True)
class Movement:
    """One posted movement on an account: ``amount`` is signed (credit positive), ``balance`` after it."""

    seq: int
    transfer_id: str
    at: datetime
    code: str
    ref: str
    amount: int
    balance: int


@dataclass(frozen=True, slots=True)
class ReadStatement(Command):
    """Stream the movements of an investor's cash in one currency over ``[start, end)`` (either open)."""

    queue: ClassVar[str] = "ledger.statement"
    investor_id: str
    currency: str
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True, slots=True)
class StatementPart:
    """One part of a statement: the first carries ``opening``, the last ``closing`` (the balances either side of
    the period), every part a run of movements in order."""

    movements: tuple[Movement, ...] = ()
    opening: int | None = None
    closing: int | None = None
