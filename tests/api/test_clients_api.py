"""Registering lenders and investors over HTTP: ids are checked at the edge, registration is idempotent."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


def test_an_investor_is_registered_once_and_read_back(app_client: TestClient) -> None:
    first = app_client.put("/v1/investors/ana", json={"name": "Ana"})
    again = app_client.put("/v1/investors/ana", json={"name": "Ana"})
    assert first.status_code == 200 and first.json()["created"] is True
    assert again.json()["created"] is False
    assert app_client.get("/v1/investors/ana").json() == {"investor_id": "ana", "name": "Ana"}


def test_an_unregistered_investor_is_not_found(app_client: TestClient) -> None:
    response = app_client.get("/v1/investors/nobody")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_investor"


@pytest.mark.parametrize("path", ["/v1/investors/", "/v1/lenders/"])
@pytest.mark.parametrize("bad", ["..", "%2E%2E", "a%00b", "x" * 65, "-x", "a%20b"])
def test_an_id_that_breaks_the_shape_of_identifiers_is_refused_naming_it(
    app_client: TestClient, path: str, bad: str
) -> None:
    response = app_client.put(path + bad, json={"name": "X"})
    assert response.status_code in (404, 422), response.text
    if response.status_code == 422:
        assert response.json()["error"]["field"] in ("investor_id", "lender_id")
