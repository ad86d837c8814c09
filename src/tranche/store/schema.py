"""The one ``MetaData`` of tranche's store. Each bounded context declares its tables in its own
``tables.py`` on it, and its migrations on its own Alembic branch."""

from __future__ import annotations

from sqlalchemy import MetaData

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def load_all_tables() -> MetaData:
    """Import every context's tables so that ``metadata`` knows all of them (for checks and tools)."""
    import importlib
    import pkgutil

    import tranche

    for module in pkgutil.iter_modules(tranche.__path__):
        if module.ispkg:
            try:
                importlib.import_module(f"tranche.{module.name}.tables")
            except ModuleNotFoundError as exc:
                if exc.name != f"tranche.{module.name}.tables":
                    raise
    return metadata
