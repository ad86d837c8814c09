"""The ledger in a running process: what it listens to and what it does on a timer.

- ``match.<lender>.matched|funded|rolled_back``: reserve, post or void investors' cash;
- ``loan.<lender>.changed`` and ``loan.<lender>.repaid|defaulted|written_off|withdrawn``: distribute the
  payments the tape reported to the loan's holders and apply its status, version by version;
- every few seconds: publish ``portfolio.<id>.drifted`` for portfolios whose aggregation window has passed
  (the trading side runs the gap analyzer for them), and void reservations that timed out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import Connection, Engine

from tranche.bus import Bus, EventCodec, Message
from tranche.intake.assessing import load_documents
from tranche.intake.events import LoansChanged, LoansLeftActive
from tranche.ledger.handlers import LedgerHandlers
from tranche.store.engine import reading

log = logging.getLogger(__name__)

Publish = Callable[[Connection, str, object], None]


class SettlementNode:
    def __init__(self, engine: Engine, handlers: LedgerHandlers, publish: Publish) -> None:
        self.engine = engine
        self.handlers = handlers
        self.publish = publish

    def loans_moved(self, event: LoansChanged | LoansLeftActive) -> int:
        """Settle the payments and status of each loan version of the event; returns how many were settled."""
        keys = sorted(((k.loan_id, k.version) for k in event.loans), key=lambda k: k[1])
        with reading(self.engine) as conn:
            loans = load_documents(conn, event.lender_id, keys)
        for loan, version in loans:
            self.handlers.loan_version(loan, version)
        return len(loans)

    def tick(self) -> int:
        """Publish the drift notifications that are due and expire timed-out reservations."""
        drifted = self.handlers.due_drift()
        if drifted:
            with self.engine.begin() as conn:
                for event in drifted:
                    self.publish(conn, f"portfolio.{event.portfolio_id}.drifted", event)
        self.handlers.service.store.expire_pendings()
        return len(drifted)

    def subscriber(
        self, codec: EventCodec, *, group: str = "ledger-loans"
    ) -> Callable[[Bus], Awaitable[None]]:
        async def handle(message: Message) -> None:
            event = codec.from_message(message)
            if isinstance(event, LoansChanged | LoansLeftActive):
                await asyncio.to_thread(self.loans_moved, event)

        async def subscribe(bus: Bus) -> None:
            patterns = [
                "loan.*.changed",
                "loan.*.repaid",
                "loan.*.defaulted",
                "loan.*.written_off",
                "loan.*.withdrawn",
            ]
            await bus.subscribe(patterns, handle, group=group)

        return subscribe
