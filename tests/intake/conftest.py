from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tranche.crm.lenders import register_lender
from tranche.intake.archive import LocalArchive
from tranche.intake.service import Intake
from tranche.intake.stages import IntakeStages
from tranche.pipeline import PipelineRunner
from tranche.shared.clock import ManualClock


@dataclass
class IntakeRig:
    engine: Engine
    intake: Intake
    stages: IntakeStages
    runner: PipelineRunner
    clock: ManualClock

    def run(self) -> int:
        return self.runner.run_until_idle(max_seconds=120)


@pytest.fixture
def rig(engine: Engine, tmp_path: Path) -> Iterator[IntakeRig]:
    clock = ManualClock(datetime(2026, 11, 23, 18, 0, tzinfo=UTC))
    archive = LocalArchive(tmp_path / "archive")
    stages = IntakeStages(engine, archive, clock, slice_size=50)
    runner = PipelineRunner(engine, [stages.pipeline()], clock=clock)
    with engine.begin() as conn:
        for lender in ("acme", "bolt"):
            register_lender(conn, lender, lender.title(), at=clock.now())
    yield IntakeRig(engine, Intake(engine, archive, clock), stages, runner, clock)
