from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import bson
import pytest
from bson.decimal128 import Decimal128
from sqlalchemy import Connection

from tranche.crm.errors import UnknownLenderError
from tranche.crm.lenders import LenderConfig, configure_lender
from tranche.intake.stages import IntakeStages, ReadResult
from tranche.intake.tape import TapeFormat
from tranche.intake.tapegen import NextTapeShares, first_tape, next_tape, write_tape
from tranche.pipeline import Item, Next

if TYPE_CHECKING:
    from conftest import IntakeRig

DAY1 = date(2026, 11, 23)


def tape(tmp_path: Path, name: str, n: int, seed: int = 1) -> bytes:
    path = tmp_path / name
    write_tape(first_tape(n, "acme", seed, DAY1), path)
    return path.read_bytes()


def loan_doc(loan_id: str, **changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "loan_id": loan_id,
        "status": "active",
        "currency": "EUR",
        "principal": Decimal128("1000.00"),
        "outstanding_principal": Decimal128("800.00"),
        "interest_rate": Decimal128("0.085"),
        "term_months": 12,
        "schedule_type": "annuity",
        "issue_date": "2026-01-10",
        "next_payment_date": "2026-12-10",
        "borrower": {"country": "ES", "age": 30, "income_monthly": "2600.00", "credit_score": 710},
    }
    doc.update(changes)
    return doc


def upload(rig: IntakeRig, lender: str, data: bytes, fmt: TapeFormat = TapeFormat.BSON) -> str:
    return rig.intake.receive(lender, fmt, [data[i : i + 4096] for i in range(0, len(data), 4096)]).batch_id


def test_a_new_tape_lists_every_loan_once(rig: IntakeRig, tmp_path: Path) -> None:
    batch = upload(rig, "acme", tape(tmp_path, "d1.bson", 180))
    rig.run()
    status = rig.intake.batch_status(batch)
    assert status["status"] == "completed"
    assert status["counts"] == {
        "read": 180,
        "new": 180,
        "changed": 0,
        "unchanged": 0,
        "withdrawn": 0,
        "invalid": 0,
        "assessed": 180,
        "not_assessed": 0,
    }
    assert status["slices"] == 4


def test_a_batch_says_when_it_was_completed_and_not_before(rig: IntakeRig, tmp_path: Path) -> None:
    batch = upload(rig, "acme", tape(tmp_path, "d1.bson", 60))
    assert rig.intake.batch_status(batch)["completed_at"] is None
    rig.clock.advance(timedelta(seconds=90))
    rig.run()
    status = rig.intake.batch_status(batch)
    assert status["status"] == "completed"
    assert status["completed_at"] == rig.clock.now()


def test_the_same_bytes_uploaded_again_are_the_same_batch(rig: IntakeRig, tmp_path: Path) -> None:
    data = tape(tmp_path, "d1.bson", 20)
    first = rig.intake.receive("acme", TapeFormat.BSON, [data])
    again = rig.intake.receive("acme", TapeFormat.BSON, [data])
    assert again.batch_id == first.batch_id and not again.created


def test_a_next_tape_stores_new_versions_only_for_what_changed(rig: IntakeRig, tmp_path: Path) -> None:
    day1 = tmp_path / "d1.bson"
    write_tape(first_tape(200, "acme", 1, DAY1), day1)
    upload(rig, "acme", day1.read_bytes())
    rig.run()
    day2 = tmp_path / "d2.bson"
    with day1.open("rb") as previous:
        write_tape(
            next_tape(previous, "acme", 2, DAY1 + timedelta(days=1), NextTapeShares(0.2, 0.05, 0.0, 10)), day2
        )
    batch = upload(rig, "acme", day2.read_bytes())
    rig.run()
    counts = rig.intake.batch_status(batch)["counts"]
    assert counts["read"] == 210
    assert counts["new"] == 10
    assert counts["changed"] > 0 and counts["withdrawn"] > 0
    assert counts["new"] + counts["changed"] + counts["unchanged"] == 210
    # A changed loan has two versions, in order, and its first version is untouched.
    changed = next(d for d in map(bson.decode, _docs(day2.read_bytes())) if d.get("payments"))
    versions = rig.intake.versions("acme", changed["loan_id"])
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[1]["outstanding_principal"] < versions[0]["outstanding_principal"]


def test_field_order_and_number_format_are_not_changes(rig: IntakeRig) -> None:
    upload(rig, "acme", bson.encode(loan_doc("L1")))
    rig.run()
    reordered = dict(reversed(list(loan_doc("L1", principal="1000.0", outstanding_principal="800").items())))
    batch = upload(rig, "acme", bson.encode(reordered))
    rig.run()
    assert rig.intake.batch_status(batch)["counts"]["unchanged"] == 1
    assert len(rig.intake.versions("acme", "L1")) == 1


def test_invalid_documents_are_reported_with_the_field_and_the_rest_goes_on(rig: IntakeRig) -> None:
    docs = [
        loan_doc("ok-1"),
        loan_doc("bad-currency", currency="EURO"),
        loan_doc("negative", principal="-5.00"),
        loan_doc("too-precise", outstanding_principal="800.001"),
        loan_doc("double", outstanding_principal=800.0),
        {k: v for k, v in loan_doc("no-rate").items() if k != "interest_rate"},
        loan_doc("ok-2"),
    ]
    batch = upload(rig, "acme", b"".join(bson.encode(d) for d in docs))
    rig.run()
    status = rig.intake.batch_status(batch)
    assert status["counts"]["new"] == 2 and status["counts"]["invalid"] == 5
    errors = {(e["loan_id"], e["field"]) for e in rig.intake.batch_errors(batch)}
    assert errors == {
        ("bad-currency", "currency"),
        ("negative", "principal"),
        ("too-precise", "outstanding_principal"),
        ("double", "outstanding_principal"),
        ("no-rate", "interest_rate"),
    }


def test_a_lender_may_allow_doubles_which_are_read_by_their_shortest_repr(rig: IntakeRig) -> None:
    with rig.engine.begin() as conn:
        configure_lender(conn, "acme", LenderConfig(allow_double_amounts=True), at=rig.clock.now(), by="test")
    upload(rig, "acme", bson.encode(loan_doc("d", outstanding_principal=800.1)))
    rig.run()
    assert rig.intake.loan("acme", "d")["outstanding_principal"] == 80010


def test_duplicate_loan_ids_in_one_tape_are_all_refused(rig: IntakeRig) -> None:
    docs = [loan_doc(f"L{i}") for i in range(120)] + [loan_doc("L7", term_months=24), loan_doc("L100")]
    batch = upload(rig, "acme", b"".join(bson.encode(d) for d in docs))
    rig.run()
    status = rig.intake.batch_status(batch)
    assert status["counts"]["invalid"] == 4
    assert status["counts"]["new"] == 118
    refused = sorted((e["loan_id"], e["document"]) for e in rig.intake.batch_errors(batch))
    assert refused == [("L100", 100), ("L100", 121), ("L7", 7), ("L7", 120)]


@pytest.fixture
def slices_queued_by_an_older_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Diff items as they were queued before they named the documents the read stage refused."""
    read_commit = IntakeStages.read_commit

    def without_refused(self: IntakeStages, conn: Connection, item: Item, result: ReadResult) -> Next:
        nxt = read_commit(self, conn, item, result)
        children = tuple(
            replace(child, payload={k: v for k, v in child.payload.items() if k != "refused"})
            for child in nxt.children
        )
        return replace(nxt, children=children)

    monkeypatch.setattr(IntakeStages, "read_commit", without_refused)


def test_a_slice_that_does_not_name_its_refused_documents_still_leaves_them_alone(
    slices_queued_by_an_older_version: None, rig: IntakeRig
) -> None:
    docs = [loan_doc(f"L{i}") for i in range(120)] + [loan_doc("L7", term_months=24)]
    batch = upload(rig, "acme", b"".join(bson.encode(d) for d in docs))
    rig.run()
    status = rig.intake.batch_status(batch)
    assert (status["counts"]["invalid"], status["counts"]["new"]) == (2, 119)


def test_a_truncated_tail_is_reported_and_everything_before_it_is_kept(
    rig: IntakeRig, tmp_path: Path
) -> None:
    path = tmp_path / "t.bson"
    write_tape(first_tape(60, "acme", 3, DAY1), path, corrupt_tail=True)
    batch = upload(rig, "acme", path.read_bytes())
    rig.run()
    status = rig.intake.batch_status(batch)
    assert status["damaged"] and status["counts"]["new"] == 60 and status["counts"]["invalid"] == 1
    [error] = rig.intake.batch_errors(batch)
    assert error["document"] == 60 and error["field"] == "(tape)" and "truncated" in error["reason"]


def test_a_loan_leaving_active_counts_as_withdrawn(rig: IntakeRig) -> None:
    upload(rig, "acme", bson.encode(loan_doc("L1")) + bson.encode(loan_doc("L2")))
    rig.run()
    batch = upload(rig, "acme", bson.encode(loan_doc("L1", status="withdrawn")))
    rig.run()
    status = rig.intake.batch_status(batch)
    assert status["counts"]["withdrawn"] == 1 and status["counts"]["changed"] == 1
    assert rig.intake.loan("acme", "L1")["status"] == "withdrawn"


def test_json_lines_tapes_are_read_like_bson(rig: IntakeRig) -> None:
    lines = [
        json.dumps(
            loan_doc(f"J{i}", principal="1000.00", outstanding_principal="500.00", interest_rate="0.07")
        )
        for i in range(3)
    ]
    batch = upload(rig, "acme", ("\n".join(lines) + "\n\n").encode(), TapeFormat.NDJSON)
    rig.run()
    assert rig.intake.batch_status(batch)["counts"]["new"] == 3
    assert rig.intake.loan("acme", "J1")["document"]["interest_rate"] == "0.07"


def test_unknown_fields_are_kept_verbatim(rig: IntakeRig) -> None:
    upload(
        rig, "acme", bson.encode(loan_doc("L1", purpose="car", collateral={"kind": "vehicle", "vin": "X1"}))
    )
    rig.run()
    document = rig.intake.loan("acme", "L1")["document"]
    assert document["collateral"] == {"kind": "vehicle", "vin": "X1"} and document["purpose"] == "car"


def test_the_state_as_of_a_time_is_the_version_then(rig: IntakeRig) -> None:
    upload(rig, "acme", bson.encode(loan_doc("L1")))
    rig.run()
    first_seen = rig.clock.now()
    rig.clock.advance(timedelta(days=1))
    upload(rig, "acme", bson.encode(loan_doc("L1", outstanding_principal="700.00")))
    rig.run()
    assert rig.intake.loan("acme", "L1")["version"] == 2
    assert rig.intake.loan("acme", "L1", as_of=first_seen)["version"] == 1


def test_an_unknown_lender_cannot_upload(rig: IntakeRig) -> None:
    with pytest.raises(UnknownLenderError):
        upload(rig, "nobody", bson.encode(loan_doc("L1")))


def test_batches_of_one_lender_apply_in_upload_order(rig: IntakeRig) -> None:
    # Both tapes are queued before any work runs: the second must be diffed against the first.
    upload(rig, "acme", bson.encode(loan_doc("L1")))
    upload(rig, "acme", bson.encode(loan_doc("L1", outstanding_principal="700.00")))
    upload(rig, "bolt", bson.encode(loan_doc("L1")))
    rig.run()
    versions = rig.intake.versions("acme", "L1")
    assert [(v["version"], v["outstanding_principal"]) for v in versions] == [(1, 80000), (2, 70000)]
    assert len(rig.intake.versions("bolt", "L1")) == 1


def _docs(data: bytes) -> list[bytes]:
    from tranche.intake.tape import RawDocument, iter_documents

    return [d.data for d in iter_documents(io.BytesIO(data), TapeFormat.BSON) if isinstance(d, RawDocument)]


def test_risk_rules_on_a_borrowers_extra_attribute_see_the_document_as_sent(rig: IntakeRig) -> None:
    from sqlalchemy import select

    from tranche.assessment.rules import parse_risk_rules
    from tranche.assessment.store import save_risk_rules
    from tranche.assessment.tables import loan_assessments

    rules = {
        "groups": ["A", "B", "C"],
        "default": "A",
        "rules": [{"group": "C", "all": [{"field": "borrower.employment", "op": "==", "value": "student"}]}],
    }
    with rig.engine.begin() as conn:
        save_risk_rules(conn, "acme", parse_risk_rules(rules), rig.clock.now())
    student = loan_doc(
        "S1",
        borrower={
            "country": "ES",
            "age": 30,
            "income_monthly": "900",
            "credit_score": 710,
            "employment": "student",
        },
    )
    upload(rig, "acme", bson.encode(student) + bson.encode(loan_doc("W1")))
    rig.run()
    a = loan_assessments.c
    with rig.engine.connect() as conn:
        groups = dict(conn.execute(select(a.loan_id, a.risk_group)).tuples().all())
    assert groups == {"S1": "C", "W1": "A"}


def test_with_the_built_in_projection_the_diff_assesses_what_it_stores(
    rig: IntakeRig, tmp_path: Path
) -> None:
    from sqlalchemy import func, select

    from tranche.assessment.tables import loan_assessments
    from tranche.pipeline.tables import pipeline_items, pipeline_trace

    batch = upload(rig, "acme", tape(tmp_path, "d1.bson", 120))
    rig.run()
    status = rig.intake.batch_status(batch)
    assert status["status"] == "completed"
    assert status["counts"]["assessed"] == 120 and status["counts"]["not_assessed"] == 0
    with rig.engine.connect() as conn:
        stages = set(conn.execute(select(pipeline_trace.c.stage).distinct()).scalars())
        items = conn.execute(select(func.count()).select_from(pipeline_items)).scalar_one()
        assessed = conn.execute(
            select(func.count(), func.count(func.distinct(loan_assessments.c.loan_id)))
        ).one()
    # Read, then one diff item per slice, which assessed its loans: none waited in the assess stage.
    assert stages == {"intake.read", "intake.diff"} and items == 1 + 3
    assert tuple(assessed) == (120, 120)


def test_a_loan_the_built_in_projection_cannot_project_is_refused_at_its_place_in_the_tape(
    rig: IntakeRig,
) -> None:
    # Intake takes amounts up to 2**63 - 1 minor units; the projection, up to 10**12 (ten billion EUR).
    huge = loan_doc("huge", principal="20000000000.00", outstanding_principal="20000000000.00")
    batch = upload(rig, "acme", b"".join(bson.encode(d) for d in (loan_doc("ok-1"), huge, loan_doc("ok-2"))))
    rig.run()
    status = rig.intake.batch_status(batch)
    assert status["counts"]["new"] == 3
    assert status["counts"]["assessed"] == 2 and status["counts"]["not_assessed"] == 1
    [error] = rig.intake.batch_errors(batch)
    assert (error["document"], error["loan_id"], error["field"]) == (1, "huge", "outstanding_principal")
    assert "is not in 1 .. 1000000000000" in error["reason"]
