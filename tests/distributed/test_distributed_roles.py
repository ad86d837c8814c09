"""The roles as separate processes on PostgreSQL and RabbitMQ: one relay publishes each event once whatever the
number of processes, a killed relay or market owner is replaced by a standby within seconds, and the relay and
the API ride out restarts of PostgreSQL and of RabbitMQ, with no process restarted by hand."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.pool import NullPool

from tranche.bus import Message
from tranche.bus.outbox import add_to_outbox
from tranche.bus.rabbit import RabbitBus
from tranche.config import WORKER_ROLES, Settings
from tranche.store.engine import create_store_engine
from tranche.testing.cluster import Cluster, RoleProcess

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]


class Events:
    """Writes events into the outbox as the roles' transactions do, and counts what reaches a subscriber
    bound to them on the broker."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.written: list[str] = []
        self.seen: Counter[str] = Counter()

    def write(self, n: int) -> None:
        with self.engine.begin() as conn:
            for _ in range(n):
                index = len(self.written)
                self.written.append(
                    add_to_outbox(conn, f"probe.{index}.happened", Message.of_json({"n": index}))
                )

    async def handle(self, message: Message) -> None:
        self.seen[message.message_id] += 1

    async def all_seen(self, timeout: float) -> float:
        """Wait until every written event arrived; returns how long that took."""
        started = time.monotonic()
        while set(self.seen) != set(self.written):
            if time.monotonic() - started > timeout:
                missing = len(set(self.written) - set(self.seen))
                raise AssertionError(f"{missing} of {len(self.written)} events did not arrive in {timeout}s")
            await asyncio.sleep(0.05)
        return time.monotonic() - started


@pytest.fixture
async def events(cluster: Cluster) -> AsyncIterator[Events]:
    engine = create_store_engine(cluster.database_url, poolclass=NullPool)
    found = Events(engine)
    bus = RabbitBus(cluster.bus_url, reconnect_interval=0.5)
    await bus.start()
    # A durable group: what the relay publishes while this subscriber reconnects waits for it.
    await bus.subscribe("probe.#", found.handle, group="probe-collector", prefetch=200)
    yield found
    await bus.close()
    engine.dispose()


def owner_among(processes: list[RoleProcess], job: str) -> RoleProcess:
    owners = [p for p in processes if (p.job(job) or {}).get("state") == "owner"]
    assert len(owners) == 1, [p.job(job) for p in processes]
    return owners[0]


def test_a_worker_started_without_roles_takes_every_role_but_the_api() -> None:
    assert Settings.from_env({}, default_roles=WORKER_ROLES).roles == {"pipeline", "market", "ledger"}
    assert Settings.from_env({"TRANCHE_ROLES": "market"}, default_roles=WORKER_ROLES).roles == {"market"}


@pytest.mark.anyio
async def test_two_relays_publish_each_event_once_and_a_killed_relay_is_replaced_within_seconds(
    cluster: Cluster, events: Events
) -> None:
    workers = [cluster.worker("pipeline-a", "pipeline"), cluster.worker("pipeline-b", "pipeline")]
    await asyncio.to_thread(cluster.wait_ready)
    for _ in range(8):
        events.write(60)
        await asyncio.sleep(0.1)
    await events.all_seen(60)
    await asyncio.sleep(2.0)  # a second copy of any event would be here by now
    assert len(events.seen) == 480
    assert max(events.seen.values()) == 1, "each event is published once"
    relay = owner_among(workers, "outbox-relay")
    standby = next(w for w in workers if w is not relay)
    assert standby.job("outbox-relay")["state"] == "standby"  # type: ignore[index]
    assert "outbox relay: standby" in standby.log()

    relay.kill()
    events.write(50)
    took = await events.all_seen(30)
    assert took < 5.0, f"events flowed again {took:.1f} s after the relay owner was killed"
    assert standby.job("outbox-relay")["state"] == "owner"  # type: ignore[index]


@pytest.mark.anyio
async def test_the_relay_and_the_api_ride_out_a_postgresql_restart_and_a_broker_restart(
    cluster: Cluster, events: Events
) -> None:
    api = cluster.api()
    ledger = cluster.worker("ledger", "ledger")
    await asyncio.to_thread(cluster.wait_ready)
    events.write(20)
    await events.all_seen(30)
    # The relay marks a batch published right after the broker confirms it; a crash before the mark commits
    # would publish that batch again (at least once), which is not what this test is about.
    await asyncio.sleep(1.0)

    restarting = asyncio.create_task(asyncio.to_thread(cluster.restart_postgres, 6.0))
    await asyncio.sleep(2.0)
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        during = await client.get("/v1/batches/b-missing")
        assert during.status_code == 503, during.text
        assert during.headers["retry-after"] == "5"
        assert during.json()["error"]["code"] == "store_unavailable"
        assert (await client.get("/health")).status_code == 200, "the process itself is alive"
        not_ready = await client.get("/ready")
        assert not_ready.status_code == 503 and not_ready.json()["store"] == "unreachable"
        assert (await client.get("/v1/health")).status_code == 503
    await restarting
    events.write(20)
    await events.all_seen(60)
    assert api.alive and ledger.alive
    owner_among([api, ledger], "outbox-relay")
    for process in (api, ledger):
        assert "the store is unreachable" in process.log() and "the store is reachable again" in process.log()

    await asyncio.to_thread(cluster.restart_rabbit)
    events.write(20)
    await events.all_seen(90)
    assert api.alive and ledger.alive
    assert max(events.seen.values()) == 1
    await asyncio.to_thread(api.wait_ready, 60)
    await asyncio.to_thread(ledger.wait_ready, 60)


def test_a_second_market_worker_stands_by_and_takes_over_when_the_owner_is_killed(cluster: Cluster) -> None:
    first = cluster.worker("market-1", "market")
    first.wait_ready()
    owner = first.wait_job("market", "owner")
    second = cluster.worker("market-2", "market")
    second.wait_ready()
    standby = second.wait_job("market", "standby")
    assert standby["owner"] == owner["owner"]
    assert f"standby for market: owned by {owner['owner']}" in second.log()
    vhost = urlsplit(cluster.bus_url).path.lstrip("/")
    assert cluster.rabbit is not None
    consumers = cluster.rabbit.ctl("list_consumers", "-p", vhost, "queue_name", "--no-table-headers").stdout
    assert [line.strip() for line in consumers.splitlines()].count("market") == 1, (
        "the standby does not consume"
    )

    first.kill()
    killed = time.monotonic()
    taken = second.wait_job("market", "owner", timeout=15)
    assert time.monotonic() - killed < 5.0
    assert taken["epoch"] == owner["epoch"] + 1
    second.wait_for_log("market: rebuilding the books from the store")
    second.wait_for_log("market: owned here")

    first.start()  # the killed worker comes back as a standby
    first.wait_ready()
    assert first.wait_job("market", "standby")["owner"] == taken["owner"]
