from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any

import bson
import httpx

from tranche.intake.tapegen import first_tape, write_tape

BSON = {"content-type": "application/bson"}


def wait_completed(api: httpx.Client, batch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        status: dict[str, Any] = api.get(f"/v1/batches/{batch_id}").json()
        if status["status"] == "completed":
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def test_a_tape_uploaded_in_chunks_is_processed_and_reported(api: httpx.Client, tmp_path: Path) -> None:
    assert api.put("/v1/lenders/acme", json={"name": "Acme"}).status_code == 200
    tape = tmp_path / "t.bson"
    write_tape(first_tape(450, "acme", 1, date(2026, 11, 23)), tape, corrupt_tail=True)

    def chunks() -> Any:
        with tape.open("rb") as handle:
            while chunk := handle.read(7000):
                yield chunk

    response = api.post("/v1/lenders/acme/batches", content=chunks(), headers=BSON)
    assert response.status_code == 202
    batch_id = response.json()["batch_id"]
    status = wait_completed(api, batch_id)
    assert status["counts"]["new"] == 450 and status["damaged"] and status["slices"] == 5

    again = api.post("/v1/lenders/acme/batches", content=tape.read_bytes(), headers=BSON)
    assert again.status_code == 200 and again.json()["batch_id"] == batch_id

    errors = api.get(f"/v1/batches/{batch_id}/errors").json()
    assert errors["errors"][0]["field"] == "(tape)" and errors["next"] is None

    loan = api.get("/v1/lenders/acme/loans/acme-00000003").json()
    assert loan["version"] == 1 and loan["document"]["loan_id"] == "acme-00000003"
    assert api.get("/v1/lenders/acme/loans/acme-00000003/versions").json()["versions"][0]["version"] == 1
    before = api.get("/v1/lenders/acme/loans/acme-00000003", params={"as_of": "2000-01-01T00:00:00Z"})
    assert before.status_code == 404


def test_errors_page_through_in_tape_order(api: httpx.Client) -> None:
    api.put("/v1/lenders/acme", json={"name": "Acme"})
    docs = [{"loan_id": f"L{i}", "status": "active"} for i in range(25)]
    batch_id = api.post(
        "/v1/lenders/acme/batches", content=b"".join(map(bson.encode, docs)), headers=BSON
    ).json()["batch_id"]
    wait_completed(api, batch_id)
    seen: list[int] = []
    url: str | None = f"/v1/batches/{batch_id}/errors?limit=40"
    while url:
        page = api.get(url).json()
        seen.extend(e["document"] for e in page["errors"])
        url = page["next"]
    assert seen == sorted(seen) and set(seen) == set(range(25)) and len(seen) > 25  # several fields per loan


def test_errors_name_the_record_and_the_field(api: httpx.Client) -> None:
    unknown = api.post("/v1/lenders/nobody/batches", content=b"x", headers=BSON)
    assert unknown.status_code == 404
    assert unknown.json()["error"] == {
        "code": "unknown_lender",
        "message": "no lender is registered as 'nobody'",
        "record": "nobody",
        "field": "lender_id",
    }
    api.put("/v1/lenders/acme", json={"name": "Acme"})
    wrong_type = api.post("/v1/lenders/acme/batches", content=b"x", headers={"content-type": "text/csv"})
    assert wrong_type.status_code == 422 and wrong_type.json()["error"]["field"] == "content-type"
    empty = api.post("/v1/lenders/acme/batches", content=b"", headers=BSON)
    assert empty.status_code == 422 and empty.json()["error"]["code"] == "empty_tape"
    assert api.get("/v1/batches/bat_missing").json()["error"]["record"] == "bat_missing"
    bad_config = api.put("/v1/lenders/acme/config", json={"retained_share": "1.5"})
    assert bad_config.status_code == 422 and bad_config.json()["error"]["field"] == "retained_share"


def test_a_lender_configuration_change_is_a_new_version(api: httpx.Client) -> None:
    api.put("/v1/lenders/acme", json={"name": "Acme"})
    changed = api.put("/v1/lenders/acme/config", json={"allow_double_amounts": True})
    assert changed.json()["version"] == 2
    assert api.get("/v1/lenders/acme/config").json()["config"]["allow_double_amounts"] is True


def test_a_batch_can_be_replayed_over_the_api(api: httpx.Client) -> None:
    api.put("/v1/lenders/acme", json={"name": "Acme"})
    doc = {
        "loan_id": "L1",
        "status": "active",
        "currency": "EUR",
        "principal": "100.00",
        "outstanding_principal": "100.00",
        "interest_rate": "0.05",
        "term_months": 12,
        "schedule_type": "bullet",
        "issue_date": "2026-01-01",
        "borrower": {"country": "FR", "age": 40, "income_monthly": "3000", "credit_score": 700},
    }
    batch_id = api.post("/v1/lenders/acme/batches", content=bson.encode(doc), headers=BSON).json()["batch_id"]
    wait_completed(api, batch_id)
    replay = api.post(f"/v1/batches/{batch_id}/replay", params={"wipe": "true"})
    assert replay.status_code == 202 and replay.json()["queued"] == [{"batch_id": batch_id, "run": 2}]
    deadline = time.monotonic() + 30
    while (status := api.get(f"/v1/batches/{batch_id}").json())["status"] != "completed" or status[
        "run"
    ] != 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status["counts"]["new"] == 1
    assert api.get("/v1/lenders/acme/loans/L1/versions").json()["versions"][0]["run"] == 2
