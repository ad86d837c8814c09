"""Assessment's store functions over a SQLAlchemy Core ``Connection`` (SQLite and PostgreSQL alike).

The caller owns the transaction: each function runs inside whatever ``engine.begin()`` it was given, so that
a slice's assessments land together with the rest of its stage's work or not at all.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select
from sqlalchemy.exc import IntegrityError

from tranche.assessment.domain import Assessment, RiskRuleVersion
from tranche.assessment.errors import RiskRulesConflictError
from tranche.assessment.rules import RiskRules, parse_risk_rules
from tranche.assessment.slices import COLUMNS, assessment_row
from tranche.assessment.tables import loan_assessments, risk_rules
from tranche.shared.clock import stored_utc
from tranche.shared.loan import ScheduleType

__all__ = [
    "assessment_history",
    "latest_assessments",
    "latest_risk_rules",
    "latest_risk_rules_many",
    "risk_rules_history",
    "save_risk_rules",
    "write_assessment_rows",
    "write_assessments",
]

_CHUNK = 500  # keys per IN (...) list: well under SQLite's variable limit


def save_risk_rules(
    conn: Connection,
    lender_id: str,
    rules: RiskRules,
    created_at: datetime,
    based_on: int | None = None,
) -> RiskRuleVersion:
    """Append a new version of a lender's risk rules (the latest version + 1) and return it.

    ``based_on`` is the version the operator edited; if another version was saved since, nothing is stored
    and :class:`RiskRulesConflictError` is raised, as it is when two writers race for the same version.
    """
    current = (
        conn.execute(
            select(func.max(risk_rules.c.version)).where(risk_rules.c.lender_id == lender_id)
        ).scalar_one()
        or 0
    )
    if based_on is not None and based_on != current:
        raise RiskRulesConflictError(
            f"the risk rules of {lender_id} are at version {current}, not {based_on}; edit the latest",
            record=lender_id,
            field="version",
        )
    version = current + 1
    try:
        with conn.begin_nested():
            conn.execute(
                risk_rules.insert().values(
                    lender_id=lender_id, version=version, rules=rules.to_json(), created_at=created_at
                )
            )
    except IntegrityError:
        raise RiskRulesConflictError(
            f"version {version} of the risk rules of {lender_id} was stored by another writer",
            record=lender_id,
            field="version",
        ) from None
    return RiskRuleVersion(lender_id, version, rules, created_at)


def _rule_version(row: Row[Any]) -> RiskRuleVersion:
    return RiskRuleVersion(
        row.lender_id, row.version, parse_risk_rules(row.rules), stored_utc(row.created_at)
    )


def latest_risk_rules(conn: Connection, lender_id: str) -> RiskRuleVersion:
    """The rules that apply to a lender now: its latest stored version, or the default (version 0)."""
    return latest_risk_rules_many(conn, [lender_id])[lender_id]


def latest_risk_rules_many(conn: Connection, lender_ids: Iterable[str]) -> dict[str, RiskRuleVersion]:
    """:func:`latest_risk_rules` for several lenders in one query."""
    wanted = sorted(set(lender_ids))
    found = {lender: RiskRuleVersion.default(lender) for lender in wanted}
    if not wanted:
        return found
    latest = (
        select(risk_rules.c.lender_id, func.max(risk_rules.c.version).label("version"))
        .where(risk_rules.c.lender_id.in_(wanted))
        .group_by(risk_rules.c.lender_id)
        .subquery()
    )
    rows = conn.execute(
        select(risk_rules).join(
            latest,
            (risk_rules.c.lender_id == latest.c.lender_id) & (risk_rules.c.version == latest.c.version),
        )
    )
    for row in rows:
        found[row.lender_id] = _rule_version(row)
    return found


def risk_rules_history(conn: Connection, lender_id: str) -> list[RiskRuleVersion]:
    """Every stored version of a lender's rules, oldest first (the default version 0 is not stored)."""
    rows = conn.execute(
        select(risk_rules).where(risk_rules.c.lender_id == lender_id).order_by(risk_rules.c.version)
    )
    return [_rule_version(row) for row in rows]


_UNIQUE = "lender_id, loan_id, loan_version, rule_version"


def _insert_sql(placeholder: str) -> str:
    return (
        f"INSERT INTO {loan_assessments.name} ({', '.join(COLUMNS)}) "
        f"VALUES ({', '.join([placeholder] * len(COLUMNS))}) ON CONFLICT ({_UNIQUE}) DO NOTHING"
    )


_INSERT = {"sqlite": _insert_sql("?"), "postgresql": _insert_sql("%s")}


def write_assessments(conn: Connection, assessments: Sequence[Assessment]) -> None:
    """Append assessments in the caller's transaction, in one statement.

    Idempotent: an assessment of a loan version under a rule version that is already stored is skipped,
    so a slice redone after a crash never doubles a loan's assessment. The rows go straight to the driver:
    this runs for every loan of every tape, and SQLAlchemy's per-row parameter processing would cost more
    than the database's insert.
    """
    sqlite = conn.dialect.name == "sqlite"
    write_assessment_rows(conn, [assessment_row(a, sqlite) for a in assessments])


def write_assessment_rows(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """:func:`write_assessments` of rows made by :func:`~tranche.assessment.slices.assessment_row` (for this
    connection's database)."""
    if not rows:
        return
    statement = _INSERT.get(conn.dialect.name)
    if statement is None:  # pragma: no cover - tranche runs on these two only
        raise NotImplementedError(f"no idempotent insert for {conn.dialect.name}")
    conn.exec_driver_sql(statement, list(rows))


def _assessment(row: Row[Any]) -> Assessment:
    principal: tuple[int, ...] = ()
    interest: tuple[int, ...] = ()
    if row.schedule is not None:
        schedule = json.loads(row.schedule)
        principal, interest = tuple(schedule["principal"]), tuple(schedule["interest"])
    return Assessment(
        lender_id=row.lender_id,
        loan_id=row.loan_id,
        loan_version=row.loan_version,
        rule_version=row.rule_version,
        risk_group=row.risk_group,
        currency=row.currency,
        schedule_type=ScheduleType(row.schedule_type),
        periods=row.periods,
        total_principal=row.total_principal,
        total_interest=row.total_interest,
        next_payment_amount=row.next_payment_amount,
        next_payment_date=row.next_payment_date,
        maturity_date=row.maturity_date,
        assessed_at=stored_utc(row.assessed_at),
        principal=principal,
        interest=interest,
    )


def latest_assessments(
    conn: Connection, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Assessment]:
    """The latest assessment of each (lender_id, loan_id) that has one, whatever its loan version."""
    by_lender: dict[str, list[str]] = defaultdict(list)
    for lender_id, loan_id in set(keys):
        by_lender[lender_id].append(loan_id)
    found: dict[tuple[str, str], Assessment] = {}
    for lender_id, loan_ids in by_lender.items():
        loan_ids.sort()
        for start in range(0, len(loan_ids), _CHUNK):
            chunk = loan_ids[start : start + _CHUNK]
            latest = (
                select(func.max(loan_assessments.c.assessment_id))
                .where(loan_assessments.c.lender_id == lender_id, loan_assessments.c.loan_id.in_(chunk))
                .group_by(loan_assessments.c.loan_id)
            )
            rows = conn.execute(select(loan_assessments).where(loan_assessments.c.assessment_id.in_(latest)))
            for row in rows:
                found[(row.lender_id, row.loan_id)] = _assessment(row)
    return found


def assessment_history(conn: Connection, lender_id: str, loan_id: str) -> list[Assessment]:
    """Every assessment of a loan, oldest first: one per loan version and rule version it met."""
    rows = conn.execute(
        select(loan_assessments)
        .where(loan_assessments.c.lender_id == lender_id, loan_assessments.c.loan_id == loan_id)
        .order_by(loan_assessments.c.assessment_id)
    )
    return [_assessment(row) for row in rows]
