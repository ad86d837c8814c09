"""The distributed mode as separate processes, for tests: the roles started as an operator starts them
(``tranche serve --no-workers`` with ``TRANCHE_ROLES=api``, ``tranche worker`` with the roles of a pipeline, a
ledger or a market worker) against a real PostgreSQL database and a RabbitMQ virtual host, each of which can be
killed (SIGKILL), stopped and started again; and the servers themselves restarted under them.

    with Cluster(database_url, bus_url, tmp_path, postgres=pg, rabbit=node) as cluster:
        cluster.migrate()                                  # `tranche migrate`, as on deployment
        api = cluster.api()                                # TRANCHE_ROLES=api tranche serve --no-workers
        market = cluster.worker("market-1", "market")      # TRANCHE_ROLES=market tranche worker
        cluster.wait_ready()
        market.kill()                                      # SIGKILL
        cluster.restart_postgres(down_seconds=3)
        market.start()                                     # the same role, started again
        print(api.get("/ready").json())

Every process gets its own HTTP port (the API's, or a worker's ops port serving ``/health``, ``/ready``
and ``/metrics``) and its own log file (``<workdir>/<name>.log``, kept across restarts); ``extra_env``
passes settings to all of them (``TRANCHE_OWNERSHIP_HEARTBEAT``, ``TRANCHE_PARSE_PROCESSES``, ...).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tranche.testing.ports import free_port
from tranche.testing.postgres import PostgresServer, ServerUnavailable
from tranche.testing.rabbitmq import RabbitNode

FAST_OWNERSHIP = {"TRANCHE_OWNERSHIP_HEARTBEAT": "0.3", "TRANCHE_OWNERSHIP_TTL": "3"}
"""Ownership timings for tests: a standby tries every 0.3 s; a hung owner is replaced after 3 s."""


class RoleProcess:
    """One tranche process of the cluster; started by :meth:`Cluster.api` or :meth:`Cluster.worker`."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], port: int, log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.port = port
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    def start(self) -> RoleProcess:
        if self.alive:
            return self
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {self.starts} of {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL by default: no clean-up at all) and, for a fatal one, wait for the end."""
        if not self.alive or self.process is None:
            return
        os.kill(self.process.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            self.process.wait(timeout=60)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL if it has not ended within ``timeout`` seconds."""
        if not self.alive or self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def restart(self) -> RoleProcess:
        self.kill()
        return self.start()

    def get(self, path: str, timeout: float = 10) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout)

    def ready(self) -> dict[str, Any] | None:
        """The body of ``/ready`` when it answers 200, else None."""
        try:
            response = self.get("/ready", timeout=3)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited ({self.exit_code}):\n{self.log()[-4000:]}")
            body = self.ready()
            if body is not None:
                return body
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready within {timeout}s:\n{self.log()[-4000:]}")

    def job(self, job: str) -> dict[str, Any] | None:
        """What ``/ready`` says of ``job`` (``state``, ``epoch``, ``owner``), or None."""
        body = self.ready()
        if body is None:
            return None
        found: dict[str, Any] | None = body["jobs"].get(job)
        return found

    def wait_job(self, job: str, state: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            seen = self.job(job)
            if seen is not None and seen["state"] == state:
                return seen
            time.sleep(0.1)
        raise TimeoutError(
            f"{self.name}: {job} not {state} within {timeout}s (last {seen}):\n{self.log()[-3000:]}"
        )

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: no {text!r} in the log within {timeout}s:\n{self.log()[-3000:]}")


class Cluster:
    """The processes of one distributed deployment; see the module docstring."""

    def __init__(
        self,
        database_url: str,
        bus_url: str,
        workdir: Path,
        *,
        postgres: PostgresServer | None = None,
        rabbit: RabbitNode | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.bus_url = bus_url
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.postgres = postgres
        self.rabbit = rabbit
        self.processes: dict[str, RoleProcess] = {}
        self.env = {
            **os.environ,
            "TRANCHE_DATABASE_URL": database_url,
            "TRANCHE_BUS_URL": bus_url,
            # The archive is shared storage: every process of the deployment reads what the API wrote.
            "TRANCHE_ARCHIVE_DIR": str(self.workdir / "archive"),
            "TRANCHE_FEEDBACK_DIR": str(self.workdir / "feedback"),
            "TRANCHE_RUN_DIR": str(self.workdir / "run"),
            "TRANCHE_LOG_LEVEL": "INFO",
            "TRANCHE_PARSE_PROCESSES": "0",
            **FAST_OWNERSHIP,
            **(extra_env or {}),
        }
        self.env.pop("TRANCHE_ROLES", None)

    def _command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tranche.cli", *args]

    def migrate(self, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """Run ``tranche migrate`` once, as on deployment; raises when it fails."""
        done = subprocess.run(
            self._command("migrate"), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"tranche migrate failed:\n{done.stderr}")
        return done

    def _add(self, name: str, args: list[str], env: dict[str, str], port: int) -> RoleProcess:
        if name in self.processes:
            raise ValueError(f"a process named {name!r} exists already")
        role = RoleProcess(name, self._command(*args), env, port, self.workdir / f"{name}.log")
        self.processes[name] = role
        return role.start()

    def api(self, name: str = "api", *, roles: str = "api", **env: str) -> RoleProcess:
        """``TRANCHE_ROLES=<roles> tranche serve --no-workers`` on a port of its own."""
        port = free_port()
        settings = {**self.env, "TRANCHE_ROLES": roles, "TRANCHE_OPS_PORT": "0", **env}
        return self._add(name, ["serve", "--no-workers", "--port", str(port)], settings, port)

    def worker(self, name: str, roles: str, **env: str) -> RoleProcess:
        """``TRANCHE_ROLES=<roles> tranche worker``, serving /health, /ready and /metrics on an ops port."""
        port = free_port()
        settings = {**self.env, "TRANCHE_ROLES": roles, "TRANCHE_OPS_PORT": str(port), **env}
        return self._add(name, ["worker"], settings, port)

    def __getitem__(self, name: str) -> RoleProcess:
        return self.processes[name]

    def wait_ready(self, timeout: float = 90) -> None:
        for role in self.processes.values():
            if role.alive:
                role.wait_ready(timeout)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.processes[name].kill(sig)

    def restart(self, name: str) -> RoleProcess:
        return self.processes[name].restart()

    def restart_rabbit(self) -> None:
        """A full stop and start of the broker under the running processes."""
        if self.rabbit is None:
            raise ServerUnavailable("this cluster was given no RabbitMQ node to restart")
        self.rabbit.restart()

    def restart_postgres(self, down_seconds: float = 0.0) -> None:
        """Stop PostgreSQL at once (every connection dropped, as in a crash), stay down ``down_seconds``,
        and start it again with the same data and port."""
        server = self.postgres
        if server is None:
            raise ServerUnavailable("this cluster was given no PostgreSQL server to restart")
        restart = getattr(server, "restart", None)
        if restart is not None:
            restart(down_seconds=down_seconds)
            return
        run: Any = server._run
        run(str(server.bin / "pg_ctl"), "-D", str(server.data_dir), "-m", "immediate", "-w", "stop")
        time.sleep(down_seconds)
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={server.port} -c unix_socket_directories={server.data_dir.parent}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        log = server.data_dir.parent / "log"
        run(
            str(server.bin / "pg_ctl"),
            "-D",
            str(server.data_dir),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "start",
        )

    def close(self) -> None:
        for role in self.processes.values():
            with contextlib.suppress(Exception):
                role.stop(timeout=10)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
