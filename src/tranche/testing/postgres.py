"""A private, throwaway PostgreSQL server in a temporary directory on a loopback port.

PostgreSQL refuses to run as root; when we are root the server runs as the ``postgres`` system user (which
Debian's ``postgresql`` package creates). ``scripts/ensure-servers`` installs the package when it is missing.

    with PostgresServer() as pg:
        url = pg.create_database("t1")   # postgresql+psycopg://postgres@127.0.0.1:PORT/t1
        pg.restart(down_seconds=2)       # the same server, data and port: clients see an outage
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tranche.testing.ports import free_port


class ServerUnavailable(RuntimeError):
    """The server's binaries are missing or it did not start."""


def find_pg_bin() -> Path:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise ServerUnavailable("PostgreSQL is not installed (no initdb); run scripts/ensure-servers")


class PostgresServer:
    """Starts on ``start()`` (or ``with``), stops and removes its data on ``stop()``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bin = find_pg_bin()
        self._tmp: str | None = None
        self._as_postgres = os.geteuid() == 0
        self.user = "postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    @property
    def data_dir(self) -> Path:
        assert self._tmp is not None
        return Path(self._tmp, "data")

    def start(self) -> PostgresServer:
        self._tmp = tempfile.mkdtemp(prefix="tranche-pg-")
        if self._as_postgres:
            shutil.chown(self._tmp, user="postgres")
        try:
            self._run(
                str(self.bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
            self._pg_ctl_start()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = getattr(exc, "stderr", "") or ""
            self.stop()
            raise ServerUnavailable(f"PostgreSQL did not start: {detail.strip()}") from exc
        return self

    def _pg_ctl_start(self) -> None:
        assert self._tmp is not None
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self._tmp}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(Path(self._tmp, "log")),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def restart(self, *, down_seconds: float = 0.0, mode: str = "immediate") -> None:
        """Stop the server (``mode`` as ``pg_ctl stop -m``: ``immediate`` drops every connection at once, like
        a crash), stay down ``down_seconds``, and start it again on the same port with the same data."""
        if self._tmp is None:
            raise ServerUnavailable("the server was never started")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")
        time.sleep(down_seconds)
        try:
            self._pg_ctl_start()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = getattr(exc, "stderr", "") or ""
            raise ServerUnavailable(f"PostgreSQL did not start again: {detail.strip()}") from exc

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, template: str | None = None) -> str:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True
        ) as conn:
            suffix = f" TEMPLATE {template}" if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{suffix}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self._tmp is None:
            return
        if self.data_dir.exists():
            self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "stop", check=False
            )
        for _ in range(50):
            if not Path(self.data_dir, "postmaster.pid").exists():
                break
            time.sleep(0.1)
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.stop()
