from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tranche.bootstrap import Container, bootstrap
from tranche.config import Settings
from tranche.crm.lenders import register_lender
from tranche.intake.service import Intake
from tranche.pipeline import PipelineRunner
from tranche.shared.clock import ManualClock


@dataclass
class IntakeRig:
    container: Container
    engine: Engine
    intake: Intake
    runner: PipelineRunner
    clock: ManualClock

    def run(self) -> int:
        return self.runner.run_until_idle(max_seconds=120)


@pytest.fixture
def rig(database_url: str, tmp_path: Path) -> Iterator[IntakeRig]:
    """The process as bootstrap wires it (intake and assessment stages), run on this thread, slices of 50."""
    clock = ManualClock(datetime(2026, 11, 23, 18, 0, tzinfo=UTC))
    settings = replace(
        Settings(),
        database_url=database_url,
        archive_dir=tmp_path / "archive",
        slice_size=50,
        parse_processes=0,
        log_level="WARNING",
    )
    container = bootstrap(settings, clock=clock)
    with container.engine.begin() as conn:
        for lender in ("acme", "bolt"):
            register_lender(conn, lender, lender.title(), at=clock.now())
    yield IntakeRig(container, container.engine, container.intake, container.runner, clock)
    container.close()
