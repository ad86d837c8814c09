"""A private RabbitMQ node for the bus tests, started once per session (shared with the contract suite)."""

from __future__ import annotations

import os

import pytest

from tranche.testing.postgres import ServerUnavailable
from tranche.testing.rabbitmq import RabbitNode

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def rabbit_node() -> RabbitNode:
    """The session's node; in CI a node that cannot start fails the tests, it never skips them."""
    try:
        return RabbitNode.shared()
    except ServerUnavailable as error:
        if IN_CI:
            pytest.fail(f"RabbitMQ unavailable: {error}", pytrace=False)
        pytest.skip(f"RabbitMQ unavailable: {error}")


@pytest.fixture(scope="session")
def rabbit_url(rabbit_node: RabbitNode) -> str:
    return rabbit_node.url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
