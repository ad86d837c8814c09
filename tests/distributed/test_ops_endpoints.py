"""/health, /ready and /metrics of a process, on each store (in one process, with the in-process bus)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tranche.bootstrap import Container


def test_health_answers_without_looking_at_anything(app_client: TestClient) -> None:
    response = app_client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_ready_names_the_store_the_broker_and_the_jobs(app_client: TestClient, container: Container) -> None:
    container.ownership.claim("outbox-relay")
    container.ownership.step()
    with TestClient(app_client.app) as client:  # the lifespan starts the bus
        body = client.get("/ready").json()
        assert client.get("/v1/health").status_code == 200
    assert body["store"] == "ok" and body["broker"] == "ok"
    assert body["jobs"]["outbox-relay"]["state"] == "owner"


def test_metrics_expose_the_outbox_ownership_and_stages_and_what_contexts_register(
    app_client: TestClient, container: Container
) -> None:
    batches = container.metrics.counter("tranche_test_batches", "batches seen by a context")
    batches.inc(3)
    container.metrics.probe("tranche_test_book_offers", "offers resting", lambda: 42)
    text = app_client.get("/metrics").text
    for name in (
        "tranche_store_up 1.0",
        "tranche_outbox_unpublished 0.0",
        "tranche_stage_items{",
        "tranche_test_batches_total 3.0",
        "tranche_test_book_offers 42.0",
    ):
        assert name in text, name


def test_the_api_answers_503_with_retry_after_while_the_store_is_unreachable(
    app_client: TestClient, container: Container
) -> None:
    from sqlalchemy.exc import OperationalError

    def unreachable(*_args: object, **_kwargs: object) -> object:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    container.engine.connect = unreachable  # type: ignore[method-assign]
    response = app_client.get("/v1/batches/b-1")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == "store_unavailable"
    ready = app_client.get("/ready")
    assert ready.status_code == 503 and ready.json()["store"] == "unreachable"
    assert app_client.get("/health").status_code == 200
