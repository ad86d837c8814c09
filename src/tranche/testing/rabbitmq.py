"""A private, throwaway RabbitMQ node: own node name, loopback ports, temporary data and log directories.

The node runs Debian's ``rabbitmq-server`` in the foreground as a child process in its own session, with
its own Erlang port mapper (``epmd``) on a private port, so that it neither sees nor disturbs any other
node on the machine (the system service included). ``scripts/ensure-servers`` installs the package when it
is missing.

    with RabbitNode() as node:
        url = node.url                  # amqp://guest:guest@127.0.0.1:PORT/
        node.restart()                  # full stop and start; queues and persistent messages survive

RabbitMQ's consumer ack timeout is server-wide (``consumer_timeout``, checked about once a minute), so it
is a setting of the node here, not of a queue.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from tranche.testing.ports import free_port
from tranche.testing.postgres import ServerUnavailable

_SCRIPTS = Path("/usr/lib/rabbitmq/bin")


def find_rabbit_scripts() -> Path:
    """The directory holding ``rabbitmq-server`` and ``rabbitmqctl`` (not the ``/usr/sbin`` wrappers,
    which switch to the ``rabbitmq`` user and the system node's directories)."""
    if (_SCRIPTS / "rabbitmq-server").exists():
        return _SCRIPTS
    found = shutil.which("rabbitmq-server")
    if found:
        return Path(found).resolve().parent
    raise ServerUnavailable("RabbitMQ is not installed (no rabbitmq-server); run scripts/ensure-servers")


_shared: RabbitNode | None = None
_shared_failure: ServerUnavailable | None = None


class RabbitNode:
    """Starts on ``start()`` (or ``with``), stops and removes its data on ``stop()``."""

    @classmethod
    def shared(cls) -> RabbitNode:
        """One node for the whole process (a test session), started on first use, stopped at exit; so that
        fixtures in several test folders share it instead of each starting their own."""
        global _shared, _shared_failure
        if _shared_failure is not None:
            raise _shared_failure
        if _shared is None:
            node = cls()
            atexit.register(node.stop)
            try:
                node.start()
            except ServerUnavailable as error:
                _shared_failure = error
                raise
            _shared = node
        return _shared

    def __init__(
        self,
        *,
        port: int | None = None,
        consumer_timeout_ms: int | None = None,
        start_timeout: float = 90.0,
    ) -> None:
        self.port = port or free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.nodename = f"tranche-{uuid.uuid4().hex[:8]}@localhost"
        self.consumer_timeout_ms = consumer_timeout_ms
        self.start_timeout = start_timeout
        self.scripts = find_rabbit_scripts()
        self._tmp: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def directory(self) -> Path:
        if self._tmp is None:
            raise ServerUnavailable("the node has not been started")
        return self._tmp

    def _env(self) -> dict[str, str]:
        root = self.directory
        env = dict(os.environ)
        env.update(
            # The Erlang cookie lives in $HOME; a private one keeps the system node's cookie out of it.
            HOME=str(root),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(root / "mnesia"),
            RABBITMQ_LOG_BASE=str(root / "log"),
            RABBITMQ_CONFIG_FILE=str(root / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(root / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(root / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(root / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(root / "node.pid"),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def _write_config(self) -> None:
        root = self.directory
        lines = [
            f"listeners.tcp.1 = 127.0.0.1:{self.port}",
            # Small test disks must not trip the free-disk alarm, which would block every publisher.
            "disk_free_limit.absolute = 20MB",
            "log.console = false",
            "log.file.level = warning",
        ]
        if self.consumer_timeout_ms is not None:
            lines.append(f"consumer_timeout = {self.consumer_timeout_ms}")
        (root / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        (root / "advanced.config").write_text("[].\n")
        (root / "rabbitmq-env.conf").write_text("")
        (root / "enabled_plugins").write_text("[].\n")

    def ctl(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl -n NODE ARGS`` against this node."""
        command = [str(self.scripts / "rabbitmqctl"), "-n", self.nodename, *args]
        result = subprocess.run(
            command, env=self._env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise ServerUnavailable(f"rabbitmqctl {' '.join(args)} failed: {result.stderr or result.stdout}")
        return result

    def add_vhost(self, name: str) -> str:
        """Create the virtual host ``name`` (guest may use it) and return its URL: a private namespace of
        exchanges and queues on the shared node, such as one deployment of a test's own."""
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{name}"

    def start(self) -> RabbitNode:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="tranche-rabbit-"))
            self._write_config()
        self._launch()
        return self

    def _launch(self) -> None:
        self._log = self.directory / "server.out"
        with open(self._log, "ab") as log:
            self._process = subprocess.Popen(
                [str(self.scripts / "rabbitmq-server")],
                env=self._env(),
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._await_startup()

    def _await_startup(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        # Polling the AMQP port is cheap; each rabbitmqctl call boots an Erlang VM, so it runs once at the end.
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise ServerUnavailable(f"rabbitmq-server exited early:\n{self._tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            self._kill()
            raise ServerUnavailable(f"RabbitMQ did not open port {self.port} in time:\n{self._tail()}")
        self.ctl("await_startup", "--timeout", str(int(self.start_timeout)), timeout=self.start_timeout + 10)

    def _tail(self) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return self._log.read_text(errors="replace")[-3000:]

    def restart(self, *, full: bool = True) -> None:
        """Restart the node, keeping its data: a full stop and start of the VM, or (``full=False``) only of
        the RabbitMQ application inside it (faster; every connection is closed all the same)."""
        if full:
            self._halt()
            self._launch()
        else:
            self.ctl("stop_app")
            self.ctl("start_app")
            self.ctl("await_startup")

    def stop_app(self) -> None:
        """Stop the broker application, leaving the VM up (clients see the broker as down)."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup")

    def _halt(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self.ctl("stop", timeout=60, check=False)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._kill()
        self._process = None

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the node and its port mapper, and remove its directory."""
        if self._tmp is None:
            return
        try:
            self._halt()
        finally:
            # epmd daemonises out of the node's session; it listens on our private port, so it is ours.
            subprocess.run(
                ["epmd", "-port", str(self.epmd_port), "-kill"],
                env=self._env(),
                capture_output=True,
                timeout=10,
                check=False,
            )
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> RabbitNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
