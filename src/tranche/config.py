"""Settings, read once from the environment (12-factor) and frozen.

The same artifact runs everywhere; only these variables change between the embedded default and the
distributed mode.

========================  ===========================================  =====================================
variable                  meaning                                      default
========================  ===========================================  =====================================
TRANCHE_DATABASE_URL      SQLAlchemy URL of the store                  ``sqlite:///var/tranche.db``
TRANCHE_ARCHIVE_DIR       where raw uploaded tapes are archived        ``var/archive``
TRANCHE_FEEDBACK_DIR      where lender feedback files are written      ``var/feedback``
TRANCHE_BUS_URL           ``memory://`` or ``amqp://user:pw@host/vh``  ``memory://``
TRANCHE_CASHFLOW_URL      external cash-flow service; empty: built-in  (empty)
TRANCHE_LOG_LEVEL         logging level                                ``INFO``
TRANCHE_WORKERS           worker loops per stage in this process       ``1``
TRANCHE_SLICE_SIZE        loans per unit of pipeline work              ``1000``
TRANCHE_LENDERS           no longer partitions work (any pipeline      (empty)
                          worker serves every lender; pin lenders at
                          run time instead): a warning when set
TRANCHE_WORKER_NAME       the name lenders are pinned to               the host name
TRANCHE_PARSE_PROCESSES   processes that decode and validate tapes,    the number of cores (0 on one core)
                          a budget shared by every tranche process of
                          the host (0: on the worker threads)
TRANCHE_ROLES             what this process does, of api, pipeline,    ``tranche serve``: all four;
                          market (the matcher), ledger                 ``serve --no-workers``: api;
                                                                       ``tranche worker``: pipeline,
                                                                       market, ledger
TRANCHE_DRIFT_WINDOW      seconds over which the ledger folds a        ``30``
                          portfolio's changes into one notification
TRANCHE_OWNERSHIP_TTL     seconds after which a standby replaces an    ``15``
                          owner of a singleton job that stopped
                          renewing (a killed owner is replaced sooner
                          on PostgreSQL, see tranche.store.ownership)
TRANCHE_OWNERSHIP_        seconds between an owner's renewals and a    ``1``
HEARTBEAT                 standby's attempts
TRANCHE_OPS_HOST,         where a worker without the API serves        ``127.0.0.1``, ``9100`` (0: none)
TRANCHE_OPS_PORT          /health, /ready and /metrics
TRANCHE_RUN_DIR           lock files the processes of one host share   ``<temp dir>/tranche``
                          (the parse budget)
========================  ===========================================  =====================================
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tranche.shared.errors import ValidationError


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(f"{name}={raw!r} is not an integer", field=name) from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValidationError(f"{name}={raw!r} is not a number", field=name) from None


ROLES = ("api", "pipeline", "market", "ledger")
WORKER_ROLES = ("pipeline", "market", "ledger")
"""What ``tranche worker`` does unless ``TRANCHE_ROLES`` says otherwise: every role but the API. Each
singleton job of a role (the matcher, the drift timer, the relay) has one owner in the deployment, so a
second worker is a standby for them, never a second matcher."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything tranche reads from its environment."""

    database_url: str = "sqlite:///var/tranche.db"
    archive_dir: Path = Path("var/archive")
    feedback_dir: Path = Path("var/feedback")
    bus_url: str = "memory://"
    cashflow_url: str | None = None
    log_level: str = "INFO"
    workers: int = 1
    slice_size: int = 1000
    lenders: frozenset[str] = field(default_factory=frozenset)
    worker_name: str | None = None
    parse_processes: int = 0
    roles: frozenset[str] = frozenset(ROLES)
    drift_window_seconds: int = 30
    ownership_ttl: float = 15.0
    ownership_heartbeat: float = 1.0
    ops_host: str = "127.0.0.1"
    ops_port: int = 9100
    run_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "tranche")

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, default_roles: Iterable[str] = ROLES
    ) -> Settings:
        """The settings of ``env`` (the process's environment by default); ``default_roles`` are the roles
        when ``TRANCHE_ROLES`` is unset, which depend on the command (see :data:`WORKER_ROLES`)."""
        env = os.environ if env is None else env
        defaults = cls()
        lenders = env.get("TRANCHE_LENDERS", "")
        return cls(
            database_url=env.get("TRANCHE_DATABASE_URL") or defaults.database_url,
            archive_dir=Path(env.get("TRANCHE_ARCHIVE_DIR") or defaults.archive_dir),
            feedback_dir=Path(env.get("TRANCHE_FEEDBACK_DIR") or defaults.feedback_dir),
            bus_url=env.get("TRANCHE_BUS_URL") or defaults.bus_url,
            cashflow_url=env.get("TRANCHE_CASHFLOW_URL") or None,
            log_level=(env.get("TRANCHE_LOG_LEVEL") or defaults.log_level).upper(),
            workers=_int(env, "TRANCHE_WORKERS", defaults.workers),
            slice_size=_int(env, "TRANCHE_SLICE_SIZE", defaults.slice_size),
            lenders=frozenset(x.strip() for x in lenders.split(",") if x.strip()),
            worker_name=env.get("TRANCHE_WORKER_NAME") or None,
            parse_processes=_int(env, "TRANCHE_PARSE_PROCESSES", _default_parse_processes()),
            roles=_roles(env.get("TRANCHE_ROLES", ""), default_roles),
            drift_window_seconds=_int(env, "TRANCHE_DRIFT_WINDOW", defaults.drift_window_seconds),
            ownership_ttl=_float(env, "TRANCHE_OWNERSHIP_TTL", defaults.ownership_ttl),
            ownership_heartbeat=_float(env, "TRANCHE_OWNERSHIP_HEARTBEAT", defaults.ownership_heartbeat),
            ops_host=env.get("TRANCHE_OPS_HOST") or defaults.ops_host,
            ops_port=_int(env, "TRANCHE_OPS_PORT", defaults.ops_port),
            run_dir=Path(env.get("TRANCHE_RUN_DIR") or defaults.run_dir),
        )


def _roles(raw: str, default: Iterable[str]) -> frozenset[str]:
    if not raw.strip():
        return frozenset(default)
    roles = frozenset(r.strip() for r in raw.split(",") if r.strip())
    unknown = roles - set(ROLES)
    if unknown:
        raise ValidationError(
            f"TRANCHE_ROLES has unknown roles {sorted(unknown)}; use {', '.join(ROLES)}",
            field="TRANCHE_ROLES",
        )
    return roles


def _default_parse_processes() -> int:
    cores = os.cpu_count() or 1
    return cores if cores > 1 else 0
