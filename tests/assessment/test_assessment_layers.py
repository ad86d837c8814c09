"""Intake uses assessment; assessment never uses intake: the dependency between the two runs one way."""

from __future__ import annotations

import ast
from pathlib import Path

import tranche

ASSESSMENT = Path(tranche.__file__).parent / "assessment"


def test_no_assessment_module_imports_intake() -> None:
    found = []
    for path in sorted(ASSESSMENT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [f"{path.name}: {name}" for name in names if name.startswith("tranche.intake")]
    assert not found, found
