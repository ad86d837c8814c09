"""The operators' pipeline endpoints over HTTP (FastAPI's test client), on both databases."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from pipeline_toys import Flaky, create_effects, put, recorder

from tranche.api.app import create_app
from tranche.bootstrap import Container
from tranche.cli import main
from tranche.pipeline import (
    BreakerPolicy,
    Pipeline,
    PipelineRunner,
    RetryableError,
    RetryPolicy,
    Stage,
    TerminalError,
)
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


def test_a_failed_item_is_put_back_by_either_retry_route_once_the_service_is_fixed(
    setup: tuple[TestClient, PipelineRunner, Flaky],
) -> None:
    client, runner, service = setup
    service.down_error = TerminalError("400: the whole request was refused")
    first, second = put(runner.engine, "toy.diff", count=2, trace_key="bat_4", clock=runner.clock)
    runner.run_until_idle()
    assert client.get(f"/v1/items/{first}/trace").json()["item"]["status"] == "failed"

    service.down = False  # the operator fixed the service
    for path in (f"/v1/pipeline/items/{first}/retry", f"/v1/pipeline/parked/{second}/retry"):
        response = client.post(path)
        assert response.status_code == 200
        assert (response.json()["status"], response.json()["attempts"]) == ("ready", 0)
    runner.run_until_idle()

    traced = client.get(f"/v1/items/{first}/trace").json()
    assert traced["item"]["status"] == "done"
    assert [e["event"] for e in traced["trace"]][-4:] == ["failed", "requeued", "claimed", "succeeded"]
    assert client.post(f"/v1/pipeline/items/{first}/retry").status_code == 409


def test_the_parked_and_failed_items_of_a_batch_are_put_back_together(
    setup: tuple[TestClient, PipelineRunner, Flaky],
) -> None:
    client, runner, service = setup
    service.down_error = TerminalError("400")
    failed = put(runner.engine, "toy.diff", count=3, trace_key="bat_5", clock=runner.clock)
    other = put(runner.engine, "toy.diff", count=1, trace_key="bat_6", clock=runner.clock)
    runner.run_until_idle()
    service.down = False

    response = client.post("/v1/pipeline/items/retry", params={"trace_key": "bat_5", "limit": 2})
    assert response.status_code == 200
    assert response.json()["requeued"] == sorted(failed)[:2]
    again = client.post("/v1/pipeline/items/retry", params={"trace_key": "bat_5", "status": "failed"})
    assert again.json()["requeued"] == sorted(failed)[2:]
    runner.run_until_idle()

    statuses = [client.get(f"/v1/items/{i}/trace").json()["item"]["status"] for i in failed + other]
    assert statuses == ["done", "done", "done", "failed"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/pipeline/items", {"trace_key": "bat\x00"}),
        ("/v1/pipeline/items", {"trace_key": "x" * 129}),
        ("/v1/pipeline/items", {"trace_key": "bat_1", "limit": 10**20}),
        ("/v1/pipeline/items", {"trace_key": "bat_1", "limit": 0}),
        ("/v1/pipeline/items", {"trace_key": "bat_1", "after": "itm\x00"}),
        ("/v1/pipeline/items", {"trace_key": "bat_1", "after": "i" * 65}),
        ("/v1/items/itm%00x/trace", {}),
        ("/v1/items/" + "i" * 65 + "/trace", {}),
    ],
)
def test_every_parameter_that_reaches_sql_is_checked_at_the_edge(
    setup: tuple[TestClient, PipelineRunner, Flaky], path: str, params: dict[str, Any]
) -> None:
    client, _, _ = setup
    response = client.get(path, params=params)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 10**20},
        {"limit": 10_001},
        {"status": "done"},
        {"stage": "toy assess"},
        {"trace_key": "\x01"},
    ],
)
def test_a_bulk_retry_refuses_parameters_out_of_range(
    setup: tuple[TestClient, PipelineRunner, Flaky], params: dict[str, Any]
) -> None:
    client, _, _ = setup
    assert client.post("/v1/pipeline/items/retry", params=params).status_code == 422
    assert client.post("/v1/pipeline/items/bad%00id/retry").status_code == 422


def test_the_retry_routes_declare_their_error_answers(
    setup: tuple[TestClient, PipelineRunner, Flaky],
) -> None:
    client, _, _ = setup
    paths = client.get("/v1/openapi.json").json()["paths"]
    for path in ("/v1/pipeline/items/{item_id}/retry", "/v1/pipeline/parked/{item_id}/retry"):
        assert {"200", "404", "409", "422"} <= set(paths[path]["post"]["responses"])
    assert {"200", "404", "422"} <= set(paths["/v1/items/{item_id}/trace"]["get"]["responses"])


def test_an_operator_pins_a_lender_to_a_worker_and_unpins_it_at_run_time(
    setup: tuple[TestClient, PipelineRunner, Flaky],
) -> None:
    client, _, _ = setup
    assert client.get("/v1/pipeline/pins").json() == {"pins": []}

    pinned = client.put("/v1/pipeline/pins/acme", json={"worker": "big-box"})
    assert pinned.status_code == 200
    assert (pinned.json()["partition"], pinned.json()["worker"], pinned.json()["obeyed"]) == (
        "acme",
        "big-box",
        False,  # no worker of that name runs: every worker serves acme meanwhile
    )
    moved = client.put("/v1/pipeline/pins/acme", json={"worker": "other-box"})
    assert moved.json()["worker"] == "other-box"
    assert [p["worker"] for p in client.get("/v1/pipeline/pins").json()["pins"]] == ["other-box"]

    assert client.delete("/v1/pipeline/pins/acme").status_code == 204
    assert client.delete("/v1/pipeline/pins/acme").status_code == 204  # idempotent
    assert client.get("/v1/pipeline/pins").json() == {"pins": []}
    assert client.put("/v1/pipeline/pins/..", json={"worker": "w"}).status_code in (404, 422)
    assert client.put("/v1/pipeline/pins/acme", json={"worker": "../w"}).status_code == 422


def test_the_registered_workers_are_listed_with_their_heartbeat_and_leases(
    setup: tuple[TestClient, PipelineRunner, Flaky],
) -> None:
    client, runner, _ = setup
    runner.refresh()

    (worker,) = client.get("/v1/pipeline/workers").json()["workers"]

    assert (worker["id"], worker["name"], worker["alive"], worker["leases"]) == (
        "api-test",
        runner.name,
        True,
        0,
    )


def test_the_command_line_pins_lists_and_puts_back_through_the_api(
    setup: tuple[TestClient, PipelineRunner, Flaky], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, runner, service = setup

    def through(verb: str) -> Any:
        def call(url: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
            return getattr(client, verb)(url, **kwargs)  # the test client takes no timeout

        return call

    for verb in ("get", "put", "post", "delete"):
        monkeypatch.setattr(httpx, verb, through(verb))
    service.down_error = TerminalError("400")
    (item_id,) = put(runner.engine, "toy.diff", trace_key="bat_7", clock=runner.clock)
    runner.run_until_idle()
    service.down = False
    cli = CliRunner()

    def run(*args: str) -> str:
        result = cli.invoke(main, ["pipeline", *args, "--url", "http://testserver"])
        assert result.exit_code == 0, result.output
        return result.output

    assert '"worker": "big-box"' in run("pin", "acme", "big-box")
    assert '"partition": "acme"' in run("pins")
    assert "served by every worker" in run("unpin", "acme")
    assert '"workers"' in run("workers")
    assert "put back 1 items of bat_7" in run("retry", "--batch", "bat_7")
    runner.run_until_idle()
    assert client.get(f"/v1/items/{item_id}/trace").json()["item"]["status"] == "done"
    refused = cli.invoke(main, ["pipeline", "retry", item_id, "--url", "http://testserver"])
    assert refused.exit_code != 0 and "409" in refused.output
