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
TRANCHE_LENDERS           lenders this process works for (comma        (empty: all)
                          separated); partitions work by lender
TRANCHE_PARSE_PROCESSES   processes that decode and validate tapes     the number of cores (0 on one core)
                          (0: on the worker threads themselves)
TRANCHE_ROLES             what this process does, of api, pipeline,    all four
                          market (the matcher: one process only),
                          ledger
TRANCHE_DRIFT_WINDOW      seconds over which the ledger folds a        ``30``
                          portfolio's changes into one notification
========================  ===========================================  =====================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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


ROLES = ("api", "pipeline", "market", "ledger")


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
    parse_processes: int = 0
    roles: frozenset[str] = frozenset(ROLES)
    drift_window_seconds: int = 30

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
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
            parse_processes=_int(env, "TRANCHE_PARSE_PROCESSES", _default_parse_processes()),
            roles=_roles(env.get("TRANCHE_ROLES", "")),
            drift_window_seconds=_int(env, "TRANCHE_DRIFT_WINDOW", defaults.drift_window_seconds),
        )


def _roles(raw: str) -> frozenset[str]:
    if not raw.strip():
        return frozenset(ROLES)
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
