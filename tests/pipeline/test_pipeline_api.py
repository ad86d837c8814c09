"""The operators' pipeline endpoints over HTTP (FastAPI's test client), on both databases."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from pipeline_toys import Flaky, create_effects, put, recorder

from tranche.api.app import create_app
from tranche.bootstrap import Container
from tranche.pipeline import BreakerPolicy, Pipeline, PipelineRunner, RetryableError, RetryPolicy, Stage
from tranche.shared.clock import ManualClock


@pytest.fixture
def setup(container: Container) -> tuple[TestClient, PipelineRunner, Flaky]:
    engine = container.engine
    create_effects(engine)
    clock = ManualClock()
    service = Flaky()
    service.down, service.down_error = True, RetryableError("503 from the cash-flow service")
    stages = [
        Stage("toy.diff", recorder("toy.assess")),
        Stage(
            "toy.assess",
            recorder(None),
            work=service,
            dependency="cashflow-service",
            retry=RetryPolicy(max_attempts=1),
            breaker=BreakerPolicy(failure_threshold=5),
            claim_batch=1,
        ),
    ]
    runner = PipelineRunner(engine, [Pipeline("toy", stages)], clock=clock, owner="api-test")
    # the toy pipeline in place of intake's: the operators' endpoints serve whatever pipelines a process runs
    app = create_app(replace(container, runner=runner, clock=clock))
    return TestClient(app), runner, service


def test_stage_stats_show_depth_parked_breaker_and_rate(
    setup: tuple[TestClient, PipelineRunner, Flaky],
) -> None:
    client, runner, _ = setup
    put(runner.engine, "toy.diff", count=3, trace_key="bat_1", clock=runner.clock)
    runner.run_until_idle()

    body = client.get("/v1/pipeline/stages").json()

    assert body["runner"] == "api-test"
    diff, assess = body["stages"]
    assert (diff["stage"], diff["completed_last_minute"], diff["breaker"]) == ("toy.diff", 3, None)
    # The first failure may be the item's own (parked: max_attempts 1); the two after it say the service is
    # down, so those items wait to retry with no attempt spent.
    assert (assess["stage"], assess["parked"], assess["retry_wait"], assess["breaker"]) == (
        "toy.assess",
        1,
        2,
        "closed",
    )
    assert assess["rate_per_second"] == 0


def test_an_operator_follows_an_item_and_requeues_it_once_parked(
    setup: tuple[TestClient, PipelineRunner, Flaky],
) -> None:
    client, runner, service = setup
    (item_id,) = put(runner.engine, "toy.diff", trace_key="bat_2", clock=runner.clock)
    runner.run_until_idle()

    traced = client.get(f"/v1/items/{item_id}/trace").json()
    assert traced["item"]["status"] == "parked"
    assert "503 from the cash-flow service" in traced["item"]["last_error"]
    assert [e["event"] for e in traced["trace"]] == ["enqueued", "claimed", "succeeded", "claimed", "parked"]

    service.down = False
    requeued = client.post(f"/v1/pipeline/parked/{item_id}/retry")
    assert requeued.status_code == 200
    assert (requeued.json()["status"], requeued.json()["attempts"]) == ("ready", 0)
    again = client.post(f"/v1/pipeline/parked/{item_id}/retry")
    assert again.status_code == 409
    assert again.json()["error"]["record"] == item_id

    runner.run_until_idle()
    assert client.get(f"/v1/items/{item_id}/trace").json()["item"]["status"] == "done"


def test_the_items_of_a_trace_key_come_in_pages(setup: tuple[TestClient, PipelineRunner, Flaky]) -> None:
    client, runner, _ = setup
    ids = put(runner.engine, "toy.diff", count=3, trace_key="bat 3")

    first = client.get("/v1/pipeline/items", params={"trace_key": "bat 3", "limit": 2}).json()
    second = client.get(first["next"]).json()

    assert [i["id"] for i in first["items"] + second["items"]] == sorted(ids)
    assert second["next"] is None


def test_an_unknown_item_is_a_404_naming_it(setup: tuple[TestClient, PipelineRunner, Flaky]) -> None:
    client, _, _ = setup
    for response in (
        client.get("/v1/items/itm_nope/trace"),
        client.post("/v1/pipeline/parked/itm_nope/retry"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["record"] == "itm_nope"
