"""The bounded contexts meet only at their public faces.

A context (``tranche.intake``, ``tranche.ledger``, ...) exports what others may use from its ``__init__``; every
other module of it is private. Outside the context, code imports ``tranche.<context>`` and names from it,
never ``tranche.<context>.<module>``. The store's schema and migrations are the one exception: they gather
every context's table declarations (``tranche.<context>.tables``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import tranche

SOURCE = Path(tranche.__file__).parent
CONTEXTS = ("intake", "assessment", "trading", "matching", "ledger", "crm", "feedback")

# Imports past a context's face that are still to be removed. The list only shrinks: a new entry is a defect.
KNOWN: set[tuple[str, str]] = {
    ("tranche.api.assessment", "tranche.assessment.domain"),
    ("tranche.api.assessment", "tranche.assessment.projection"),
    ("tranche.api.assessment", "tranche.assessment.rules"),
    ("tranche.api.assessment", "tranche.assessment.store"),
    ("tranche.api.assessment", "tranche.intake.assessing"),
    ("tranche.api.errors", "tranche.assessment.errors"),
    ("tranche.api.errors", "tranche.matching.errors"),
    ("tranche.api.errors", "tranche.trading.errors"),
    ("tranche.api.intake", "tranche.intake.service"),
    ("tranche.bootstrap", "tranche.assessment.projectors"),
    ("tranche.bootstrap", "tranche.assessment.stage"),
    ("tranche.bootstrap", "tranche.intake.archive"),
    ("tranche.bootstrap", "tranche.intake.assessing"),
    ("tranche.bootstrap", "tranche.intake.events"),
    ("tranche.bootstrap", "tranche.intake.service"),
    ("tranche.bootstrap", "tranche.intake.stages"),
    ("tranche.cli", "tranche.assessment.service"),
    ("tranche.cli", "tranche.intake.tapegen"),
    ("tranche.demo", "tranche.intake.tapegen"),
    ("tranche.intake.assessing", "tranche.assessment.errors"),
    ("tranche.intake.assessing", "tranche.assessment.rules"),
    ("tranche.intake.assessing", "tranche.assessment.slices"),
    ("tranche.intake.assessing", "tranche.assessment.stage"),
    ("tranche.intake.assessing", "tranche.assessment.store"),
    ("tranche.intake.service", "tranche.crm.lenders"),
    ("tranche.intake.stages", "tranche.crm.lenders"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # "from tranche.intake import loan" imports the module tranche.intake.loan
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _private_module(imported: str) -> str | None:
    """The context-private module ``imported`` names, or None when it is a face (or not a context)."""
    parts = imported.split(".")
    if len(parts) < 3 or parts[0] != "tranche" or parts[1] not in CONTEXTS:
        return None
    module = SOURCE / parts[1] / parts[2]
    if not (module.with_suffix(".py").exists() or module.is_dir()):
        return None  # a name exported by the face, not a module
    return ".".join(parts[:3])


def crossings() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in sorted(SOURCE.rglob("*.py")):
        importer = _module_name(path)
        own = importer.split(".")[1] if "." in importer else ""
        for imported in _imports(path):
            private = _private_module(imported)
            if private is None or private.split(".")[1] == own:
                continue
            if importer.startswith("tranche.store.") and private.endswith(".tables"):
                continue
            found.add((importer, private))
    return found


def test_no_module_imports_past_another_contexts_face() -> None:
    new = sorted(crossings() - KNOWN)
    assert not new, "imports past a context's public face:\n" + "\n".join(f"  {a} -> {b}" for a, b in new)


def test_the_list_of_known_crossings_only_names_crossings_that_still_exist() -> None:
    gone = sorted(KNOWN - crossings())
    assert not gone, "remove these from KNOWN, they are fixed:\n" + "\n".join(
        f"  {a} -> {b}" for a, b in gone
    )
