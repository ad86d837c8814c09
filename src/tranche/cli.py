"""The ``tranche`` command.

Commands that talk to a running node go through its HTTP API (``--url``, default ``TRANCHE_URL`` or
http://127.0.0.1:8000); operator commands that work on the store directly bootstrap from the environment.
"""

from __future__ import annotations

import json
import os
import time
from datetime import date
from pathlib import Path
from typing import Any

import click

from tranche import __version__

DEFAULT_URL = "http://127.0.0.1:8000"
url_option = click.option(
    "--url",
    default=lambda: os.environ.get("TRANCHE_URL", DEFAULT_URL),
    show_default="TRANCHE_URL or " + DEFAULT_URL,
    help="base URL of a running tranche node",
)


@click.group()
@click.version_option(__version__, prog_name="tranche")
def main() -> None:
    """tranche: a marketplace engine where loan originators sell fractions of their loans to investors."""


@main.command()
def migrate() -> None:
    """Bring the database named by TRANCHE_DATABASE_URL to the newest schema: the one step that changes it,
    safe to run from several processes at once."""
    import logging

    from tranche.config import Settings
    from tranche.store.engine import create_store_engine
    from tranche.store.migrate import upgrade

    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = create_store_engine(settings.database_url)
    try:
        applied = upgrade(engine)
    finally:
        engine.dispose()
    click.echo("schema migrated to the newest revision" if applied else "schema is up to date")


def _bootstrap(default_roles: tuple[str, ...]) -> Any:
    """The process's container, or a clean exit naming what to do when the store's schema is behind."""
    from tranche.bootstrap import bootstrap
    from tranche.config import Settings
    from tranche.store.migrate import SchemaOutdatedError

    try:
        return bootstrap(Settings.from_env(default_roles=default_roles))
    except SchemaOutdatedError as error:
        raise click.ClickException(str(error)) from None


def _announce(container: Any, what: str) -> None:
    import logging

    logging.getLogger("tranche").info(
        "%s starting: roles %s, store %s, bus %s, owner id %s",
        what,
        ",".join(sorted(container.settings.roles)),
        container.engine.url.render_as_string(hide_password=True),
        container.settings.bus_url.split("@")[-1],
        container.ownership.owner,
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers/--no-workers",
    default=True,
    show_default=True,
    help="run the pipeline stages and event handlers in this process (without: the API alone, unless "
    "TRANCHE_ROLES says otherwise)",
)
def serve(host: str, port: int, workers: bool) -> None:
    """Run the API and the workers in one process (the embedded default)."""
    import uvicorn

    from tranche.api.app import create_app
    from tranche.config import ROLES
    from tranche.process import tune_for_workers

    container = _bootstrap(ROLES if workers else ("api",))
    _announce(container, "serve")
    if workers:
        tune_for_workers()
        container.start_workers()
    try:
        uvicorn.run(
            create_app(container), host=host, port=port, log_level=container.settings.log_level.lower()
        )
    finally:
        container.close()


@main.command()
def worker() -> None:
    """Run the workers without the API: by default the roles pipeline, market and ledger (TRANCHE_ROLES
    chooses), each singleton job owned by one process of the deployment and stood by for in the others.
    /health, /ready and /metrics are served on TRANCHE_OPS_HOST:TRANCHE_OPS_PORT."""
    import asyncio
    import signal

    from tranche.config import WORKER_ROLES
    from tranche.process import tune_for_workers

    container = _bootstrap(WORKER_ROLES)
    _announce(container, "worker")
    tune_for_workers()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        ops, sock = _ops_server(container)
        serving = asyncio.create_task(ops.serve([sock]), name="ops") if ops is not None else None
        await container.start_messaging()
        container.start_workers()
        click.echo("worker running; SIGTERM to stop")
        await stop.wait()
        await container.stop_messaging()
        if ops is not None and serving is not None:
            ops.should_exit = True
            await serving

    try:
        asyncio.run(run())
    finally:
        container.close()


def _ops_server(container: Any) -> tuple[Any, Any]:
    """uvicorn serving /health, /ready and /metrics on the ops port, and its bound socket (None, None when
    TRANCHE_OPS_PORT is 0). A port already taken stops the worker with a message naming the variable."""
    import contextlib
    import socket

    import uvicorn

    from tranche.api.ops import create_ops_app

    settings = container.settings
    if not settings.ops_port:
        return None, None
    sock = socket.socket(socket.AF_INET6 if ":" in settings.ops_host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.ops_host, settings.ops_port))
    except OSError as error:
        sock.close()
        raise click.ClickException(
            f"cannot serve /health, /ready and /metrics on {settings.ops_host}:{settings.ops_port} ({error}); "
            "give each worker of a host its own TRANCHE_OPS_PORT (0: none)"
        ) from None

    class OpsServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield  # the worker handles SIGTERM and SIGINT itself

    config = uvicorn.Config(
        create_ops_app(container),
        host=settings.ops_host,
        port=settings.ops_port,
        log_level="warning",
        access_log=False,
    )
    return OpsServer(config), sock


def _content_type(path: Path, fmt: str | None) -> str:
    kind = fmt or ("ndjson" if path.suffix in {".jsonl", ".ndjson"} else "bson")
    return "application/x-ndjson" if kind == "ndjson" else "application/bson"


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--lender", "lender_id", required=True, help="the lender whose tape this is")
@click.option("--format", "fmt", type=click.Choice(["bson", "ndjson"]), help="default: from the file name")
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="follow the batch until it is processed"
)
@url_option
def upload(file: Path, lender_id: str, fmt: str | None, wait: bool, url: str) -> None:
    """Upload a loan tape to a running node, with a progress bar."""
    import httpx

    size = file.stat().st_size

    def chunks() -> Any:
        with file.open("rb") as handle, click.progressbar(length=size, label=f"uploading {file.name}") as bar:
            while chunk := handle.read(1 << 20):
                bar.update(len(chunk))
                yield chunk

    with httpx.Client(base_url=url, timeout=httpx.Timeout(30, read=600)) as client:
        response = client.post(
            f"/v1/lenders/{lender_id}/batches",
            content=chunks(),
            headers={"content-type": _content_type(file, fmt)},
        )
        _raise_for(response)
        receipt = response.json()
        click.echo(
            f"batch {receipt['batch_id']}"
            + ("" if receipt["created"] else " (these bytes were uploaded before)")
        )
        if wait:
            status = _follow(client, receipt["batch_id"])
            click.echo(json.dumps(status, indent=2, default=str))


def _follow(client: Any, batch_id: str) -> dict[str, Any]:
    with click.progressbar(length=1, label="processing") as bar:
        while True:
            response = client.get(f"/v1/batches/{batch_id}")
            _raise_for(response)
            status: dict[str, Any] = response.json()
            if status["slices"]:
                bar.length = status["slices"]
                bar.update(status["slices_done"] - bar.pos)
            if status["status"] == "completed":
                return status
            time.sleep(0.2)


def _raise_for(response: Any) -> None:
    if response.is_error:
        try:
            detail = response.json().get("error", response.text)
        except ValueError:
            detail = response.text
        raise click.ClickException(f"{response.status_code}: {detail}")


@main.group()
def batch() -> None:
    """Follow and replay batches."""


@batch.command("status")
@click.argument("batch_id")
@url_option
def batch_status(batch_id: str, url: str) -> None:
    """A batch's status and counts."""
    import httpx

    response = httpx.get(f"{url}/v1/batches/{batch_id}", timeout=30)
    _raise_for(response)
    click.echo(json.dumps(response.json(), indent=2))


@batch.command("replay")
@click.argument("batch_id")
@click.option(
    "--wipe", is_flag=True, help="first remove what the batch (and the lender's later batches) derived"
)
def batch_replay(batch_id: str, wipe: bool) -> None:
    """Process a batch again from its archive, on the store named by TRANCHE_DATABASE_URL."""
    from tranche.bootstrap import bootstrap

    container = bootstrap()
    try:
        queued = container.intake.replay(batch_id, wipe=wipe)
        click.echo("queued: " + ", ".join(f"{b} run {r}" for b, r in queued))
        container.runner.run_until_idle()
        for queued_batch, _run in queued:
            click.echo(json.dumps(container.intake.batch_status(queued_batch), indent=2, default=str))
    finally:
        container.close()


@main.group()
def lender() -> None:
    """Register and configure lenders."""


@lender.command("add")
@click.argument("lender_id")
@click.option("--name", required=True)
@url_option
def lender_add(lender_id: str, name: str, url: str) -> None:
    """Register a lender on a running node (idempotent)."""
    import httpx

    response = httpx.put(f"{url}/v1/lenders/{lender_id}", json={"name": name}, timeout=30)
    _raise_for(response)
    click.echo(json.dumps(response.json(), indent=2))


@main.group()
def pipeline() -> None:
    """Operate the pipeline of a running node: pins, workers, putting items back."""


@pipeline.command("pin")
@click.argument("lender_id")
@click.argument("worker")
@url_option
def pipeline_pin(lender_id: str, worker: str, url: str) -> None:
    """Pin a lender to the workers named WORKER (TRANCHE_WORKER_NAME), from their next heartbeat on."""
    import httpx

    response = httpx.put(f"{url}/v1/pipeline/pins/{lender_id}", json={"worker": worker}, timeout=30)
    _raise_for(response)
    click.echo(json.dumps(response.json(), indent=2))


@pipeline.command("unpin")
@click.argument("lender_id")
@url_option
def pipeline_unpin(lender_id: str, url: str) -> None:
    """Let every worker serve a lender again."""
    import httpx

    _raise_for(httpx.delete(f"{url}/v1/pipeline/pins/{lender_id}", timeout=30))
    click.echo(f"{lender_id} is served by every worker")


@pipeline.command("pins")
@url_option
def pipeline_pins(url: str) -> None:
    """The pins, and whether each is obeyed (a worker of that name is alive)."""
    _echo_get(f"{url}/v1/pipeline/pins")


@pipeline.command("workers")
@url_option
def pipeline_workers(url: str) -> None:
    """The registered workers, their heartbeat and the leases they hold."""
    _echo_get(f"{url}/v1/pipeline/workers")


def _echo_get(address: str) -> None:
    import httpx

    response = httpx.get(address, timeout=30)
    _raise_for(response)
    click.echo(json.dumps(response.json(), indent=2))


@pipeline.command("retry")
@click.argument("item_id", required=False)
@click.option("--batch", "batch_id", help="put back every parked or failed item of this batch instead")
@url_option
def pipeline_retry(item_id: str | None, batch_id: str | None, url: str) -> None:
    """Put a parked or failed item (or those of a batch) back at its stage, attempts reset."""
    import httpx

    if (item_id is None) == (batch_id is None):
        raise click.UsageError("give either ITEM_ID or --batch")
    if item_id is not None:
        response = httpx.post(f"{url}/v1/pipeline/items/{item_id}/retry", timeout=30)
        _raise_for(response)
        click.echo(json.dumps(response.json(), indent=2))
        return
    total = 0
    while True:
        response = httpx.post(f"{url}/v1/pipeline/items/retry", params={"trace_key": batch_id}, timeout=60)
        _raise_for(response)
        requeued = response.json()["requeued"]
        total += len(requeued)
        if len(requeued) < 1000:
            break
    click.echo(f"put back {total} items of {batch_id}")


@main.group()
def tape() -> None:
    """Synthetic loan tapes."""


@tape.command("generate")
@click.argument("n", type=int)
@click.option("--lender", "lender_id", required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--today", type=click.DateTime(["%Y-%m-%d"]), default=None, help="the tape's date (default today)"
)
@click.option(
    "--previous",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="make the next day's tape from this one (N is then ignored)",
)
@click.option("--changed", type=float, default=0.10, show_default=True, help="share of loans with a payment")
@click.option("--repaid", type=float, default=0.02, show_default=True, help="share of loans repaid")
@click.option(
    "--invalid", type=float, default=0.0, show_default=True, help="share of loans sent with a mistake"
)
@click.option(
    "--new", "new_loans", type=int, default=0, show_default=True, help="new loans added to a next tape"
)
@click.option("--corrupt-tail", is_flag=True, help="end the tape with a truncated document")
def tape_generate(
    n: int,
    lender_id: str,
    out: Path,
    seed: int,
    today: Any,
    previous: Path | None,
    changed: float,
    repaid: float,
    invalid: float,
    new_loans: int,
    corrupt_tail: bool,
) -> None:
    """Write a realistic BSON tape (as mongodump does), seeded."""
    from tranche.intake.tapegen import NextTapeShares, first_tape, next_tape, write_tape

    day = today.date() if today else date.today()
    if previous is None:
        count = write_tape(first_tape(n, lender_id, seed, day), out, corrupt_tail=corrupt_tail)
    else:
        with previous.open("rb") as handle:
            shares = NextTapeShares(changed=changed, repaid=repaid, invalid=invalid, new=new_loans)
            count = write_tape(
                next_tape(handle, lender_id, seed, day, shares), out, corrupt_tail=corrupt_tail
            )
    click.echo(f"wrote {count} loans to {out} ({out.stat().st_size} bytes)")


@main.command()
@click.option("--once", is_flag=True, help="exit after the day instead of serving on")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--loans", default=2000, show_default=True, type=int, help="loans per lender on day 1")
@click.option(
    "--dir",
    "workdir",
    default=Path("var/demo"),
    show_default=True,
    type=click.Path(path_type=Path),
    help="a fresh store, archive and tapes are made here",
)
def demo(once: bool, port: int, loans: int, workdir: Path) -> None:
    """Play a whole market day through the real HTTP API and print a summary."""
    from tranche.demo import run_demo

    run_demo(workdir=workdir, port=port, loans=loans, serve_after=not once)


@main.command("cashflow-service")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8099, show_default=True, type=int)
@click.option("--fail-rate", default=0.0, show_default=True, type=float, help="share of calls that fail")
@click.option(
    "--status", "statuses", default="503", show_default=True, help="statuses of failed calls, e.g. 429,503"
)
@click.option("--latency-ms", default=0.0, show_default=True, type=float, help="delay before every answer")
@click.option(
    "--retry-after", default=1.0, show_default=True, type=float, help="Retry-After of a 429, seconds"
)
@click.option("--admin-port", type=int, help="also serve /admin here, to come back from refusing connections")
@click.option("--seed", type=int, help="seed of the failure draws, for repeatable runs")
def cashflow_service(
    host: str,
    port: int,
    fail_rate: float,
    statuses: str,
    latency_ms: float,
    retry_after: float,
    admin_port: int | None,
    seed: int | None,
) -> None:
    """Run the stand-alone cash-flow service, failing on demand (see tranche.assessment.service)."""
    from tranche.assessment.service import run_cashflow_service

    try:
        codes = [int(code) for code in statuses.split(",") if code.strip()]
        run_cashflow_service(
            host=host,
            port=port,
            fail_rate=fail_rate,
            statuses=codes,
            latency_ms=latency_ms,
            retry_after=retry_after,
            admin_port=admin_port,
            seed=seed,
            announce=click.echo,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


if __name__ == "__main__":
    main()
