from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from tranche.intake.tables import loan_versions
from tranche.intake.tape import TapeFormat
from tranche.intake.tapegen import NextTapeShares, first_tape, next_tape, write_tape

if TYPE_CHECKING:
    from conftest import IntakeRig

DAY1 = date(2026, 11, 23)


def state(rig: IntakeRig) -> list[tuple[Any, ...]]:
    """Everything that defines the loans' state, leaving out when and in which run it was recorded."""
    v = loan_versions.c
    with rig.engine.connect() as conn:
        rows = conn.execute(
            select(
                v.lender_id,
                v.loan_id,
                v.version,
                v.batch_id,
                v.status,
                v.outstanding_principal,
                v.content_hash,
            ).order_by(v.lender_id, v.loan_id, v.version)
        )
        return [tuple(r) for r in rows]


def two_days(rig: IntakeRig, tmp_path: Path) -> tuple[str, str]:
    day1, day2 = tmp_path / "d1.bson", tmp_path / "d2.bson"
    write_tape(first_tape(150, "acme", 5, DAY1), day1)
    with day1.open("rb") as previous:
        write_tape(
            next_tape(previous, "acme", 6, DAY1 + timedelta(days=1), NextTapeShares(0.3, 0.05, 0.02, 20)),
            day2,
        )
    first = rig.intake.receive("acme", TapeFormat.BSON, [day1.read_bytes()]).batch_id
    second = rig.intake.receive("acme", TapeFormat.BSON, [day2.read_bytes()]).batch_id
    rig.run()
    return first, second


def test_replaying_a_batch_without_wiping_changes_nothing(rig: IntakeRig, tmp_path: Path) -> None:
    first, _second = two_days(rig, tmp_path)
    before = state(rig)
    queued = rig.intake.replay(first)
    rig.run()
    assert queued == [(first, 2)]
    assert state(rig) == before
    status = rig.intake.batch_status(first)
    assert status["run"] == 2 and status["counts"]["new"] == 0 and status["counts"]["unchanged"] == 150


def test_replaying_with_wipe_rebuilds_the_same_state_as_a_clean_run(rig: IntakeRig, tmp_path: Path) -> None:
    first, second = two_days(rig, tmp_path)
    before = state(rig)
    errors_before = rig.intake.batch_errors(second)
    counts_before = rig.intake.batch_status(second)["counts"]
    queued = rig.intake.replay(first, wipe=True)
    assert [b for b, _ in queued] == [first, second]
    rig.run()
    assert state(rig) == before
    assert [(e["document"], e["field"]) for e in rig.intake.batch_errors(second)] == [
        (e["document"], e["field"]) for e in errors_before
    ]
    assert rig.intake.batch_status(second)["counts"] == counts_before
