"""The ledger role: what it consumes, what it serves, and what it does on a timer.

Events (:data:`HANDLERS`, plain functions; :func:`tranche.shared.messages.bind` injects ``ledger`` and
``engine``):

- ``match.<lender>.funded``: post the listed bids' reservations (the investors now hold the loan);
- ``match.<lender>.rolled_back``: void them (the cash is available again);
- ``loan.<lender>.changed`` and ``loan.<lender>.repaid|defaulted|written_off|withdrawn``: distribute the payments
  each version reported to the loan's holders and apply its status, version by version.

The ledger does not consume ``match.<lender>.matched``: the market asks it to reserve before it confirms
(:func:`serve_reservations`, service ``ledger.reserve``), so a match the ledger refused is never an
investment. It also serves statements as a chunked response (:func:`serve_statements`, ``ledger.statement``).

Every handler is idempotent: transfer ids derive from the event, a version is settled once, so an event
delivered twice changes nothing the second time.

On a timer (:func:`on_timer`, every :data:`TIMER_SECONDS`): publish the drift notifications whose window has
passed and void the reservations that timed out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

from sqlalchemy import Engine

from tranche.bus import Bus, EventCodec, Message, Subscription
from tranche.intake import LoansChanged, LoansLeftActive, load_documents
from tranche.ledger.errors import ReservationNotFoundError
from tranche.ledger.messages import BidsReserved, ReadStatement, ReserveBids, StatementPart
from tranche.ledger.repayment import LoanVersion, Payment
from tranche.ledger.reports import LedgerReports
from tranche.ledger.service import BidsOutcome, LedgerService
from tranche.matching import BidsRolledBack, LoanFunded
from tranche.shared.messages import Handlers
from tranche.store.engine import reading

log = logging.getLogger(__name__)

TIMER_SECONDS = 1.0
"""How often the ledger role runs :func:`on_timer`."""


def post_funded_bids(event: LoanFunded, ledger: LedgerService) -> BidsOutcome:
    """Post the reservations of the funded bids. A bid the ledger never reserved raises
    :class:`ReservationNotFoundError` once the others are posted, so that the event is delivered again (and ends
    in the dead-letter queue for an operator if the reservation never comes)."""
    outcome = ledger.fund(event)
    missing = None
    for bid_id, error in outcome.refused.items():
        if isinstance(error, ReservationNotFoundError):
            missing = error
        else:
            log.warning("bid %s not funded: %s", bid_id, error)
    if missing is not None:
        raise missing
    return outcome


def void_rolled_back_bids(event: BidsRolledBack, ledger: LedgerService) -> BidsOutcome:
    """Void the reservations of the rolled-back bids."""
    outcome = ledger.roll_back(event)
    for bid_id, error in outcome.refused.items():
        log.warning("bid %s not rolled back: %s", bid_id, error)
    return outcome


def settle_loan_versions(event: LoansChanged | LoansLeftActive, ledger: LedgerService, engine: Engine) -> int:
    """Settle each loan version of the event that the ledger holds (in version order); returns how many
    versions were looked at. Loans nobody funded are not read at all."""
    funded = ledger.store.loans(event.lender_id, (k.loan_id for k in event.loans))
    keys = sorted(((k.loan_id, k.version) for k in event.loans if k.loan_id in funded), key=lambda k: k[1])
    if not keys:
        return 0
    with reading(engine) as conn:
        loans = load_documents(conn, event.lender_id, keys)
    for loan, version in loans:
        ledger.settle_loan(
            LoanVersion(
                loan.lender_id,
                loan.loan_id,
                version,
                loan.currency,
                loan.status.value,
                loan.outstanding_principal,
                tuple(Payment(p.principal, p.interest) for p in loan.payments),
            )
        )
    return len(loans)


HANDLERS: Handlers = {
    LoanFunded: [post_funded_bids],
    BidsRolledBack: [void_rolled_back_bids],
    LoansChanged: [settle_loan_versions],
    LoansLeftActive: [settle_loan_versions],
}


def on_timer(ledger: LedgerService) -> int:
    """Publish the drift notifications that are due and void the reservations that timed out; returns how many
    notifications went out."""
    published = ledger.publish_due_drift()
    ledger.expire_reservations()
    return published


# -- request / response -----------------------------------------------------------------------------------------


async def serve_reservations(bus: Bus, codec: EventCodec, ledger: LedgerService) -> Subscription:
    """Answer :class:`ReserveBids` requests on ``ledger.reserve`` with :class:`BidsReserved`."""
    codec.register(ReserveBids)
    codec.register(BidsReserved)

    async def respond(request: Message) -> Message:
        command: ReserveBids = codec.from_message(request)
        answer = await asyncio.to_thread(ledger.reserve, command.matches, request_id=command.request_id)
        return codec.to_message(answer)

    return await bus.serve(ReserveBids.queue, respond)


async def request_reservations(
    bus: Bus, codec: EventCodec, command: ReserveBids, *, timeout: float = 30.0
) -> BidsReserved:
    """Ask the ledger role to reserve ``command``'s bids and wait for the answer.

    Raises the bus's errors: :class:`~tranche.bus.NoResponderError` when no ledger role serves, and
    :class:`~tranche.bus.RequestTimeoutError` after ``timeout`` seconds (the reservation may still have been made:
    asking again with the same bids is safe, it answers what was reserved)."""
    codec.register(ReserveBids)
    codec.register(BidsReserved)
    answer = await bus.request(ReserveBids.queue, codec.to_message(command), timeout=timeout)
    reserved: BidsReserved = codec.from_message(answer)
    return reserved


_PART_MOVEMENTS = 500  # about 100 KB of JSON: well under the bus's bound on a chunk


async def serve_statements(bus: Bus, codec: EventCodec, reports: LedgerReports) -> Subscription:
    """Answer :class:`ReadStatement` requests on ``ledger.statement`` with :class:`StatementPart` chunks."""
    codec.register(ReadStatement)
    codec.register(StatementPart)

    async def respond(request: Message) -> AsyncIterator[Message]:
        command: ReadStatement = codec.from_message(request)
        statement = await asyncio.to_thread(
            reports.statement,
            command.investor_id,
            command.currency,
            command.start,
            command.end,
            chunk_size=_PART_MOVEMENTS,
        )
        chunks = iter(statement)
        part = StatementPart(opening=statement.opening)
        while True:
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is None:
                break
            yield codec.to_message(replace(part, movements=tuple(chunk)))
            part = StatementPart()
        yield codec.to_message(replace(part, closing=statement.closing))

    return await bus.serve_stream(ReadStatement.queue, respond)


async def request_statement(
    bus: Bus, codec: EventCodec, command: ReadStatement, *, timeout: float = 30.0
) -> AsyncIterator[StatementPart]:
    """The parts of a statement from the ledger role, in order (the first has ``opening``, the last
    ``closing``). ``timeout`` bounds the wait for each part."""
    codec.register(ReadStatement)
    codec.register(StatementPart)
    async for message in bus.request_stream(ReadStatement.queue, codec.to_message(command), timeout=timeout):
        part: StatementPart = codec.from_message(message)
        yield part
