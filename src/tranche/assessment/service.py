"""A stand-alone cash-flow service that speaks :mod:`tranche.assessment.protocol`, with faults on demand.

It projects with the built-in projection and can misbehave the way real dependencies do, which is what
tests and the demo need::

    tranche cashflow-service --port 8099 --fail-rate 0.3 --status 429,503 --latency-ms 50

- ``--fail-rate`` of the calls to ``/v1/*`` are answered with one of ``--status`` (chosen at random);
  a 429 carries ``Retry-After: <--retry-after>``;
- every call to ``/v1/*`` first waits ``--latency-ms``;
- ``POST /admin/down {"mode": "503"}`` answers every call with 503 until ``POST /admin/up``;
  ``{"mode": "refuse"}`` closes the listening socket, so connections are refused, until ``POST /admin/up``
  on the admin port (``--admin-port``) or after ``"seconds"`` if given;
- ``POST /admin/faults {"fail_rate": .., "statuses": [..], "latency_ms": .., "retry_after": ..}`` changes
  the faults while running; ``GET /admin/state`` shows them with counters.

In-process (tests), :class:`CashflowServer` runs it on a thread and offers the same switches as methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tranche.assessment.errors import LoanError
from tranche.assessment.projection import CashflowTerms, Projection, project_many
from tranche.assessment.protocol import decode_loan, encode_error, encode_projection

__all__ = ["CashflowServer", "Faults", "create_service_app", "run_cashflow_service"]

MAX_BATCH = 10_000
DownMode = Literal["503", "refuse"]


@dataclass
class Faults:
    """How the service misbehaves; changed at run time through ``/admin/faults`` or the server's methods."""

    fail_rate: float = 0.0
    statuses: list[int] = field(default_factory=lambda: [503])
    latency_ms: float = 0.0
    retry_after: float = 1.0

    def check(self) -> None:
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError("fail_rate must be between 0 and 1")
        if not self.statuses or any(not 400 <= s <= 599 for s in self.statuses):
            raise ValueError("statuses must be HTTP error statuses (400-599)")
        if self.latency_ms < 0 or self.retry_after < 0:
            raise ValueError("latency_ms and retry_after must not be negative")


@dataclass
class _State:
    faults: Faults
    rng: random.Random
    down: DownMode | None = None
    calls: int = 0
    injected: int = 0
    loans: int = 0
    rejected: int = 0
    on_down: Callable[[DownMode, float | None], Coroutine[Any, Any, None]] | None = None
    on_up: Callable[[], Awaitable[None]] | None = None


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def create_service_app(faults: Faults | None = None, seed: int | None = None) -> FastAPI:
    """The service's ASGI app; ``app.state.cashflow`` holds its faults and counters."""
    state = _State(faults or Faults(), random.Random(seed))
    state.faults.check()
    app = FastAPI(title="tranche cash-flow service", docs_url=None, redoc_url=None)
    app.state.cashflow = state

    @app.middleware("http")
    async def misbehave(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not request.url.path.startswith("/v1/"):
            return await call_next(request)
        state.calls += 1
        faults = state.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if state.down == "503":
            state.injected += 1
            return JSONResponse({"message": "the cash-flow service is down"}, status_code=503)
        if faults.fail_rate and state.rng.random() < faults.fail_rate:
            state.injected += 1
            status = state.rng.choice(faults.statuses)
            headers = {"Retry-After": _seconds(faults.retry_after)} if status == 429 else None
            return JSONResponse(
                {"message": f"injected failure {status}"}, status_code=status, headers=headers
            )
        return await call_next(request)

    @app.post("/v1/projections")
    async def projections(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"message": "the body is not JSON"}, status_code=400)
        documents = body.get("loans") if isinstance(body, dict) else None
        if not isinstance(documents, list):
            return JSONResponse({"message": 'the body needs "loans": a list of loans'}, status_code=400)
        if len(documents) > MAX_BATCH:
            return JSONResponse({"message": f"at most {MAX_BATCH} loans per batch"}, status_code=400)
        decoded = [decode_loan(document) for document in documents]
        valid: list[CashflowTerms] = [d for d in decoded if not isinstance(d, LoanError)]
        projected = iter(project_many(valid))
        results: list[dict[str, Any]] = []
        for item in decoded:
            outcome: Projection | LoanError = item if isinstance(item, LoanError) else next(projected)
            if isinstance(outcome, LoanError):
                state.rejected += 1
                results.append(encode_error(outcome))
            else:
                results.append(encode_projection(outcome))
        state.loans += len(documents)
        return JSONResponse({"results": results})

    @app.post("/v1/projection")
    async def projection(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"message": "the body is not JSON"}, status_code=400)
        decoded = decode_loan(body)
        outcome = decoded if isinstance(decoded, LoanError) else project_many([decoded])[0]
        state.loans += 1
        if isinstance(outcome, LoanError):
            state.rejected += 1
            return JSONResponse({"message": outcome.message, "field": outcome.field}, status_code=400)
        return JSONResponse(encode_projection(outcome)["projection"])

    _add_admin_routes(app, state)
    return app


def _add_admin_routes(app: FastAPI, state: _State) -> None:
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "down" if state.down else "up"}

    @app.get("/admin/state")
    async def show() -> dict[str, Any]:
        return {
            "down": state.down,
            "faults": asdict(state.faults),
            "calls": state.calls,
            "injected": state.injected,
            "loans": state.loans,
            "rejected": state.rejected,
        }

    @app.post("/admin/faults")
    async def faults(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            changed = Faults(**{**asdict(state.faults), **body})
            changed.check()
        except (TypeError, ValueError) as exc:
            return JSONResponse({"message": str(exc)}, status_code=400)
        state.faults = changed
        return JSONResponse(asdict(changed))

    @app.post("/admin/down")
    async def down(request: Request) -> JSONResponse:
        try:
            body = await request.json() if await request.body() else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse(
                {"message": 'the body is {"mode": "503" | "refuse", "seconds": n}'}, status_code=400
            )
        mode = body.get("mode", "503")
        seconds = body.get("seconds")
        if mode not in ("503", "refuse") or not (seconds is None or isinstance(seconds, int | float)):
            return JSONResponse({"message": 'mode is "503" or "refuse"; seconds a number'}, status_code=400)
        if mode == "refuse" and state.on_down is None:
            return JSONResponse({"message": "refusing connections needs a CashflowServer"}, status_code=400)
        if state.on_down is not None:
            # Answer first: refusing closes the socket this very request came in on.
            asyncio.get_running_loop().call_later(0.05, _spawn, state.on_down(mode, seconds))
        else:
            state.down = mode
        return JSONResponse({"down": mode, "seconds": seconds})

    @app.post("/admin/up")
    async def up() -> JSONResponse:
        if state.on_up is not None:
            await state.on_up()
        state.down = None
        return JSONResponse({"down": None})


_background: set[asyncio.Task[None]] = set()


def _spawn(coroutine: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(coroutine)
    _background.add(task)  # a task nobody holds may be collected before it runs
    task.add_done_callback(_background.discard)


class CashflowServer:
    """The service on a loopback port, on its own thread and event loop, with switches to fail.

    >>> server = CashflowServer(Faults(fail_rate=0.3, statuses=[429, 503])).start()  # doctest: +SKIP
    >>> server.go_down("refuse"); server.come_up(); server.stop()  # doctest: +SKIP
    """

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_port: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.app = create_service_app(faults, seed)
        self._state: _State = self.app.state.cashflow
        self._state.on_down = self._down
        self._state.on_up = self._up
        self.host = host
        self.port = port or _free_port(host)
        self.admin_port = admin_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._main: uvicorn.Server | None = None
        self._main_task: asyncio.Task[None] | None = None
        self._admin: uvicorn.Server | None = None
        self._reopen: asyncio.TimerHandle | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._failure: BaseException | None = None
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def faults(self) -> Faults:
        return self._state.faults

    @property
    def counters(self) -> dict[str, int]:
        s = self._state
        return {"calls": s.calls, "injected": s.injected, "loans": s.loans, "rejected": s.rejected}

    def start(self, timeout: float = 10.0) -> CashflowServer:
        """Serve on a background thread; returns once the port accepts connections."""
        self._thread = threading.Thread(target=self._run, name=f"cashflow-service:{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the cash-flow service did not start on port {self.port}")
        if self._failure is not None:
            raise RuntimeError("the cash-flow service failed to start") from self._failure
        return self

    def wait(self) -> None:
        """Block until :meth:`stop` (from another thread or a signal handler)."""
        while not self._stopped.wait(0.5):
            pass

    def set_faults(self, **changes: Any) -> None:
        changed = Faults(**{**asdict(self._state.faults), **changes})
        changed.check()
        self._state.faults = changed

    def go_down(self, mode: DownMode = "refuse", seconds: float | None = None) -> None:
        """Answer 503 to everything, or close the port so that connections are refused."""
        self._call(self._down(mode, seconds))

    def come_up(self) -> None:
        self._call(self._up())
        self._state.down = None

    def stop(self) -> None:
        if self._loop is not None and not self._stopped.is_set():
            self._call(self._shutdown())
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> CashflowServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- on the server's loop ------------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        if self._loop is None:
            raise RuntimeError("the cash-flow service is not running")
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(15)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._failure = exc
            self._ready.set()
        finally:
            self._stopped.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = stop = asyncio.Event()
        await self._open()
        if self.admin_port is not None:
            self._admin = _server(self.app)
            sock = _listen(self.host, self.admin_port)
            _spawn(self._admin.serve(sockets=[sock]))
            while not self._admin.started:
                await asyncio.sleep(0.01)
        self._ready.set()
        await stop.wait()

    async def _open(self) -> None:
        self._main = server = _server(self.app)
        self._main_task = asyncio.ensure_future(server.serve(sockets=[_listen(self.host, self.port)]))
        while not server.started:
            if self._main_task.done():
                self._main_task.result()
            await asyncio.sleep(0.01)

    async def _close(self) -> None:
        if self._main is not None and self._main_task is not None:
            self._main.should_exit = True
            await self._main_task
        self._main = self._main_task = None

    async def _down(self, mode: DownMode, seconds: float | None) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        self._state.down = mode
        if mode == "refuse":
            await self._close()
        elif self._main is None:
            await self._open()
        if seconds is not None:
            self._reopen = asyncio.get_running_loop().call_later(seconds, _spawn, self._up())

    async def _up(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if self._main is None:
            await self._open()
        self._state.down = None

    async def _shutdown(self) -> None:
        await self._close()
        if self._admin is not None:
            self._admin.should_exit = True
        if self._stop is not None:
            self._stop.set()


def _server(app: FastAPI) -> uvicorn.Server:
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2
    )
    return uvicorn.Server(config)


def _listen(host: str, port: int) -> socket.socket:
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and without it every
    # answer waits for the client's delayed ACK (about 40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _free_port(host: str) -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def run_cashflow_service(
    *,
    host: str = "127.0.0.1",
    port: int,
    fail_rate: float = 0.0,
    statuses: Sequence[int] = (503,),
    latency_ms: float = 0.0,
    retry_after: float = 1.0,
    admin_port: int | None = None,
    seed: int | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """Run the service in the foreground until interrupted (``tranche cashflow-service``)."""
    faults = Faults(fail_rate, list(statuses), latency_ms, retry_after)
    faults.check()
    server = CashflowServer(faults, host=host, port=port, admin_port=admin_port, seed=seed).start()
    admin = f", admin on port {admin_port}" if admin_port is not None else ""
    announce(f"cash-flow service on {server.url}{admin} (fail rate {fail_rate}, statuses {list(statuses)})")
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
