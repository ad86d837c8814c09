"""The ledger's request/response tests run on the in-process bus and on the session's RabbitMQ node."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from tranche.bus import Bus, InProcessBus
from tranche.testing.postgres import ServerUnavailable
from tranche.testing.rabbitmq import RabbitNode


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """A started bus of each backend."""
    if request.param == "memory":
        async with InProcessBus() as memory:
            yield memory
        return
    try:
        url = RabbitNode.shared().url
    except ServerUnavailable as error:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"RabbitMQ unavailable: {error}", pytrace=False)
        pytest.skip(f"RabbitMQ unavailable: {error}")
    from tranche.bus.rabbit import RabbitBus

    async with RabbitBus(url) as rabbit:
        yield rabbit
