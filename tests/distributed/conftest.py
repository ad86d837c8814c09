"""The roles as separate processes against the session's PostgreSQL server and RabbitMQ node: each test
gets a database of its own (copied from the migrated template) and a virtual host of its own."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tranche.testing.cluster import Cluster
from tranche.testing.postgres import PostgresServer, ServerUnavailable
from tranche.testing.rabbitmq import RabbitNode

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def rabbit_node() -> RabbitNode:
    try:
        return RabbitNode.shared()
    except ServerUnavailable as error:
        if IN_CI:
            pytest.fail(f"RabbitMQ unavailable: {error}", pytrace=False)
        pytest.skip(f"RabbitMQ unavailable: {error}")


@pytest.fixture
def cluster(
    postgres_server: PostgresServer, postgres_template: str, rabbit_node: RabbitNode, tmp_path: Path
) -> Iterator[Cluster]:
    name = f"d_{uuid.uuid4().hex[:8]}"
    database_url = postgres_server.create_database(name, template=postgres_template)
    bus_url = rabbit_node.add_vhost(name)
    with Cluster(database_url, bus_url, tmp_path, postgres=postgres_server, rabbit=rabbit_node) as running:
        yield running
    postgres_server.drop_database(name)
    rabbit_node.ctl("delete_vhost", name, check=False)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
