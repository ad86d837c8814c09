from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import uvicorn

from tranche.api.app import create_app
from tranche.bootstrap import Container, bootstrap
from tranche.config import Settings
from tranche.testing.ports import free_port


@pytest.fixture
def node(database_url: str, tmp_path: Path) -> Iterator[tuple[Container, str]]:
    """A real tranche node (API and workers) on a loopback port, and its base URL."""
    settings = replace(
        Settings(),
        database_url=database_url,
        archive_dir=tmp_path / "archive",
        log_level="WARNING",
        slice_size=100,
    )
    container = bootstrap(settings)
    container.start_workers()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(container), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield container, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    container.close()


@pytest.fixture
def api(node: tuple[Container, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node[1], timeout=30) as client:
        yield client
