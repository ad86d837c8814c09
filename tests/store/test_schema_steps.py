"""Who changes the schema: `tranche migrate` (safe to run concurrently), the embedded process on its own
SQLite file; every other process refuses a schema older than its code."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.pool import NullPool

from tranche.store.engine import create_store_engine
from tranche.store.migrate import (
    HEADS,
    SchemaOutdatedError,
    alembic_config,
    check_schema,
    current_revisions,
    prepare_schema,
    schema_lag,
)
from tranche.testing.postgres import PostgresServer


@pytest.fixture
def empty_postgres(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"empty_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


def test_every_revision_is_named_for_its_branch_and_numbered_along_it(engine: Engine) -> None:
    scripts = ScriptDirectory.from_config(alembic_config(engine))
    for script in scripts.walk_revisions():
        branch, _, number = script.revision.rpartition("_")
        assert number.isdigit() and len(number) == 4, script.revision
        labels = set(script.branch_labels or ())
        down = script.down_revision
        if down is None:
            assert labels == {branch}, script.revision
        else:
            assert isinstance(down, str) and down.rpartition("_")[0] == branch
            assert int(down.rpartition("_")[2]) < int(number)


def test_a_migrated_store_passes_the_check(engine: Engine) -> None:
    check_schema(engine)
    assert schema_lag(engine) == ([], [])


@pytest.mark.postgres
def test_a_process_refuses_an_empty_postgresql_store_and_names_the_command(empty_postgres: str) -> None:
    engine = create_store_engine(empty_postgres, poolclass=NullPool)
    with pytest.raises(SchemaOutdatedError, match="run `tranche migrate`") as raised:
        prepare_schema(engine)
    assert "has no tranche schema yet" in str(raised.value)
    assert current_revisions(engine) == frozenset(), "a role never changes the schema itself"


@pytest.mark.postgres
def test_a_process_refuses_a_schema_older_than_its_code(postgres_engine: Engine) -> None:
    head = sorted(HEADS)[0]
    branch = head.rpartition("_")[0]
    with postgres_engine.begin() as conn:
        conn.execute(
            text("UPDATE alembic_version SET version_num = :old WHERE version_num = :head"),
            {"old": f"{branch}_0000", "head": head},
        )
    with pytest.raises(SchemaOutdatedError, match=f"lacks the schema revisions {head}"):
        check_schema(postgres_engine)


def test_a_schema_newer_than_the_code_is_accepted(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    head = sorted(HEADS)[0]
    branch, _, number = head.rpartition("_")
    newer = f"{branch}_{int(number) + 1:04d}"
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE alembic_version SET version_num = :new WHERE version_num = :head"),
            {"new": newer, "head": head},
        )
    check_schema(engine)
    assert newer in caplog.text


def test_the_embedded_process_migrates_its_own_sqlite_file(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    prepare_schema(engine)
    assert current_revisions(engine) == HEADS
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_migrate_run_by_several_processes_at_once_on_an_empty_database_succeeds_in_each(
    empty_postgres: str,
) -> None:
    env = {**os.environ, "TRANCHE_DATABASE_URL": empty_postgres, "TRANCHE_LOG_LEVEL": "INFO"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "tranche.cli", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [run.communicate(timeout=240) for run in runs]
    for run, (_out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
    said = sorted(out.strip() for out, _ in outputs)
    assert said.count("schema migrated to the newest revision") == 1
    assert said.count("schema is up to date") == 2
    engine = create_store_engine(empty_postgres, poolclass=NullPool)
    assert current_revisions(engine) == HEADS
