"""Test set-up shared by every context.

The store fixtures (``engine``, ``database_url``) are parametrized over SQLite and a real, throwaway PostgreSQL
server started once per session. Where the server cannot start, the PostgreSQL half fails when ``CI=true``
(a missing server is never a silent skip there) and is skipped loudly elsewhere.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.pool import NullPool

from tranche.api.app import create_app
from tranche.bootstrap import Container, bootstrap
from tranche.config import Settings
from tranche.shared.clock import ManualClock
from tranche.store.engine import create_store_engine
from tranche.store.migrate import upgrade
from tranche.testing.postgres import PostgresServer, ServerUnavailable

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
_counter = count()


def server_missing(what: str, error: Exception) -> None:
    """Fail in CI, skip (loudly) on a developer's machine."""
    message = f"{what} unavailable: {error}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer().start()
    except ServerUnavailable as exc:
        server_missing("PostgreSQL", exc)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> str:
    """A database migrated once; every test copies it (CREATE DATABASE ... TEMPLATE) in milliseconds."""
    url = postgres_server.create_database("tranche_template")
    engine = create_store_engine(url, poolclass=NullPool)
    upgrade(engine)
    engine.dispose()
    return "tranche_template"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = create_store_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file we copy
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a migrated, empty database of each kind."""
    if request.param == "sqlite":
        target = tmp_path / "tranche.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        yield f"sqlite:///{target}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    template: str = request.getfixturevalue("postgres_template")
    name = f"t{os.getpid()}_{next(_counter)}"
    yield server.create_database(name, template=template)
    server.drop_database(name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_store_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A migrated, empty PostgreSQL database only, for what only PostgreSQL has."""
    server: PostgresServer = request.getfixturevalue("postgres_server")
    template: str = request.getfixturevalue("postgres_template")
    name = f"t{os.getpid()}_{next(_counter)}"
    engine = create_store_engine(server.create_database(name, template=template))
    yield engine
    engine.dispose()
    server.drop_database(name)


@pytest.fixture
def container(database_url: str, tmp_path: Path) -> Iterator[Container]:
    """The composition root on each database, built by ``bootstrap()`` as a process builds it, with a clock the
    test moves (``container.clock.advance``) and no pool of processes."""
    settings = Settings(
        database_url=database_url,
        archive_dir=tmp_path / "archive",
        feedback_dir=tmp_path / "feedback",
        log_level="WARNING",
        parse_processes=0,
    )
    built = bootstrap(settings, clock=ManualClock(datetime(2026, 3, 1, tzinfo=UTC)), migrate=False)
    yield built
    built.close()


@pytest.fixture
def app_client(container: Container) -> TestClient:
    """The whole HTTP API over ``container`` (FastAPI's test client; the bus is not started)."""
    return TestClient(create_app(container))
