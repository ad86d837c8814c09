from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import bson

from tranche.bootstrap import bootstrap
from tranche.bus import Message
from tranche.config import Settings
from tranche.crm.lenders import register_lender
from tranche.intake.events import LoansAssessed, LoansLeftActive, LoansListed, LoansRejected
from tranche.intake.tape import TapeFormat


def doc(loan_id: str, **changes: object) -> bytes:
    base: dict[str, object] = {
        "loan_id": loan_id,
        "status": "active",
        "currency": "EUR",
        "principal": "900.00",
        "outstanding_principal": "900.00",
        "interest_rate": "0.06",
        "term_months": 6,
        "schedule_type": "linear",
        "issue_date": "2026-06-01",
        "next_payment_date": "2026-07-01",
        "borrower": {"country": "PT", "age": 33, "income_monthly": "1900", "credit_score": 640},
    }
    base.update(changes)
    return bson.encode(base)


def test_intake_publishes_its_events_through_the_outbox_to_subscribers(
    database_url: str, tmp_path: Path
) -> None:
    container = bootstrap(
        replace(Settings(), database_url=database_url, archive_dir=tmp_path, log_level="WARNING")
    )
    with container.engine.begin() as conn:
        register_lender(conn, "acme", "Acme", at=container.clock.now())
    received: list[object] = []

    async def scenario() -> None:
        await container.start_messaging()

        async def collect(message: Message) -> None:
            received.append(container.codec.from_message(message))

        await container.bus.subscribe("loan.acme.*", collect, group="test-collector")
        container.intake.receive("acme", TapeFormat.BSON, [doc("A") + doc("B") + doc("C", currency="XYZ")])
        await asyncio.to_thread(container.runner.run_until_idle)
        container.intake.receive(
            "acme", TapeFormat.BSON, [doc("A", status="repaid", outstanding_principal="0")]
        )
        await asyncio.to_thread(container.runner.run_until_idle)
        for _ in range(200):
            if len(received) >= 4:
                break
            await asyncio.sleep(0.05)
        await container.stop_messaging()

    asyncio.run(scenario())
    container.close()
    listed = [e for e in received if isinstance(e, LoansListed)]
    assert [k.loan_id for e in listed for k in e.loans] == ["A", "B"]
    assessed = [e for e in received if isinstance(e, LoansAssessed)]
    assert [(a.loan_id, a.version) for e in assessed for a in e.loans] == [("A", 1), ("B", 1)]
    [rejected] = [e for e in received if isinstance(e, LoansRejected)]
    assert rejected.rejections[0].loan_id == "C" and rejected.rejections[0].field == "currency"
    [repaid] = [e for e in received if isinstance(e, LoansLeftActive)]
    assert repaid.status == "repaid" and repaid.loans[0].loan_id == "A" and repaid.loans[0].version == 2
