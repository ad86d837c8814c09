"""Risk groups by rules that operators configure per lender, as data. Pure: no I/O, no clock.

The rule language (JSON)::

    {
      "groups": ["A", "B", "C"],
      "default": "C",
      "rules": [
        {"group": "C", "all": [{"field": "days_past_due", "op": ">", "value": 30}]},
        {"group": "A", "all": [{"field": "credit_score", "op": ">=", "value": 700},
                               {"field": "income_to_payment", "op": ">=", "value": "3"}]},
        {"group": "B", "all": [{"field": "country", "op": "in", "value": ["EE", "LV", "LT"]}]}
      ]
    }

Rules are tried in order; a loan gets the group of the first rule whose conditions all hold, else the default.
A condition on a value the loan does not have (a missing extra attribute, the income-to-payment ratio of a
loan with nothing due) does not hold. Numbers may be written as JSON numbers or decimal strings; they are
compared as ``Decimal``. The fields are listed in :data:`FIELDS`; ``borrower.<name>`` and ``loan.<name>``
reach the extra attributes of the borrower and of the loan as the lender's tape gave them.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from tranche.assessment.errors import InvalidRiskRulesError
from tranche.assessment.projection import Projection, remaining_term
from tranche.shared.loan import Loan

__all__ = [
    "DEFAULT_RULES",
    "FIELDS",
    "CompiledRules",
    "Condition",
    "LoanFacts",
    "RiskRules",
    "Rule",
    "compile_rules",
    "parse_risk_rules",
]

Op = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not_in"]
Scalar = bool | int | float | str
_ORDER_OPS = {"<", "<=", ">", ">="}


class Condition(BaseModel):
    """``field op value``; ``in`` and ``not_in`` take a list."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str = Field(min_length=1)
    op: Op
    value: Scalar | list[Scalar]


class Rule(BaseModel):
    """A loan belongs to ``group`` if every condition holds (an empty list always holds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    group: str = Field(min_length=1, max_length=16)
    all: list[Condition]


class RiskRules(BaseModel):
    """A lender's risk rules: ordered rules, the groups they may name, the group when none matches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    groups: list[str] = Field(default_factory=lambda: ["A", "B", "C"], min_length=1)
    default: str = "C"
    rules: list[Rule] = Field(default_factory=list)

    def to_json(self) -> str:
        return self.model_dump_json()


class LoanFacts(NamedTuple):
    """What risk rules read of a loan version and of its projection, flat: made from a :class:`Loan` and its
    :class:`Projection` (:meth:`of`), or straight from a stored version's columns and its projected totals.

    ``remaining_term`` and ``next_payment_amount`` come from the projection (None without one);
    ``borrower_extra`` and ``loan_extra`` are the attributes the tape gave besides the known ones.
    """

    status: str
    currency: str
    principal: int
    outstanding_principal: int
    interest_rate: Decimal
    term_months: int
    schedule_type: str
    next_payment_date: date | None
    country: str
    age: int
    income_monthly: int
    credit_score: int
    remaining_term: int | None
    next_payment_amount: int | None
    borrower_extra: Mapping[str, Any] = MappingProxyType({})
    loan_extra: Mapping[str, Any] = MappingProxyType({})

    @classmethod
    def of(cls, loan: Loan, projection: Projection | None) -> LoanFacts:
        borrower = loan.borrower
        if projection is not None:
            remaining: int | None = projection.periods_count
        else:
            remaining = remaining_term(loan) if loan.next_payment_date is not None else None
        return cls(
            loan.status.value,
            loan.currency,
            loan.principal,
            loan.outstanding_principal,
            loan.interest_rate,
            loan.term_months,
            loan.schedule_type.value,
            loan.next_payment_date,
            borrower.country,
            borrower.age,
            borrower.income_monthly,
            borrower.credit_score,
            remaining,
            projection.next_payment if projection is not None else None,
            borrower.extra,
            loan.extra,
        )


# (kind, getter): numbers compare as Decimal or int, text as str.
Getter = Callable[[LoanFacts, date], Any]


def _income_to_payment(facts: LoanFacts, as_of: date) -> Decimal | None:
    due = facts.next_payment_amount
    if due is None or due <= 0:
        return None
    return Decimal(facts.income_monthly) / Decimal(due)


def _days_past_due(facts: LoanFacts, as_of: date) -> int:
    # A next payment date already behind the assessment date is a payment not made.
    due = facts.next_payment_date
    return max((as_of - due).days, 0) if due is not None else 0


FIELDS: dict[str, tuple[Literal["number", "text"], Getter]] = {
    "credit_score": ("number", lambda f, d: f.credit_score),
    "age": ("number", lambda f, d: f.age),
    "income_monthly": ("number", lambda f, d: f.income_monthly),
    "country": ("text", lambda f, d: f.country),
    "income_to_payment": ("number", _income_to_payment),
    "days_past_due": ("number", _days_past_due),
    "interest_rate": ("number", lambda f, d: f.interest_rate),
    "principal": ("number", lambda f, d: f.principal),
    "outstanding_principal": ("number", lambda f, d: f.outstanding_principal),
    "term_months": ("number", lambda f, d: f.term_months),
    "remaining_term": ("number", lambda f, d: f.remaining_term),
    "next_payment_amount": ("number", lambda f, d: f.next_payment_amount),
    "currency": ("text", lambda f, d: f.currency),
    "schedule_type": ("text", lambda f, d: f.schedule_type),
    "status": ("text", lambda f, d: f.status),
}
"""Every field a condition may name, besides ``borrower.<name>`` and ``loan.<name>`` extras."""

DEFAULT_RULES = RiskRules(
    groups=["A", "B", "C"],
    default="C",
    rules=[
        Rule(group="C", all=[Condition(field="days_past_due", op=">", value=30)]),
        Rule(
            group="A",
            all=[
                Condition(field="credit_score", op=">=", value=700),
                Condition(field="income_to_payment", op=">=", value=4),
            ],
        ),
        Rule(
            group="B",
            all=[
                Condition(field="credit_score", op=">=", value=600),
                Condition(field="income_to_payment", op=">=", value=2),
            ],
        ),
    ],
)
"""The rules of a lender whose operators have configured none (stored as version 0)."""


def _path(location: tuple[str | int, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def parse_risk_rules(data: str | bytes | Mapping[str, Any]) -> RiskRules:
    """Parse and check a rule set; raises :class:`InvalidRiskRulesError` naming the offending field."""
    try:
        raw = json.loads(data) if isinstance(data, str | bytes) else dict(data)
    except json.JSONDecodeError as exc:
        raise InvalidRiskRulesError(f"risk rules are not JSON: {exc.msg}", field="rules") from None
    try:
        rules = RiskRules.model_validate(raw)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        # A value that fits none of a union's members reports one error per member; its path ends with
        # the member's name, which means nothing to the operator.
        location = tuple(p for p in first["loc"] if not (isinstance(p, str) and p in _UNION_MEMBERS))
        field = _path(location) or "rules"
        message = first["msg"] if location == first["loc"] else "expected a number, a text or a list of them"
        raise InvalidRiskRulesError(f"{field}: {message}", field=field) from None
    compile_rules(rules)  # checks fields, operators and values
    return rules


_UNION_MEMBERS = {"bool", "int", "float", "str", "list[union[bool,int,float,str]]"}


def _number(value: Scalar, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRiskRulesError(f"{where}: {value!r} is not a number", field=where)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise InvalidRiskRulesError(f"{where}: {value!r} is not a number", field=where) from None
    if not number.is_finite():
        raise InvalidRiskRulesError(f"{where}: {value!r} is not a finite number", field=where)
    return number


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "in": lambda got, wanted: got in wanted,
    "not_in": lambda got, wanted: got not in wanted,
}


def _extra_getter(name: str) -> Getter:
    scope, key = name.split(".", 1)
    if scope == "borrower":
        return lambda f, d: f.borrower_extra.get(key)
    return lambda f, d: f.loan_extra.get(key)


def _coerce(got: Any, numeric: bool) -> Any:
    """An extra attribute as the tape gave it, in the condition's terms; None if it cannot be."""
    if got is None:
        return None
    if not numeric:
        return got if isinstance(got, str) else None
    if isinstance(got, bool):
        return None
    if isinstance(got, Decimal | int):
        return got
    try:
        return Decimal(str(got)) if isinstance(got, str | float) else None
    except InvalidOperation:
        return None


Test = Callable[[LoanFacts, date], bool]


def _compile_condition(condition: Condition, where: str) -> Test:
    name, op, value = condition.field, condition.op, condition.value
    is_extra = name.startswith(("borrower.", "loan.")) and len(name.split(".", 1)[1]) > 0
    if name in FIELDS:
        kind, get = FIELDS[name]
    elif is_extra:
        get = _extra_getter(name)
        # An extra's type is what the rule's value says it is.
        sample = value[0] if isinstance(value, list) and value else value
        kind = "text" if isinstance(sample, str) and _is_text(sample) else "number"
    else:
        known = ", ".join(sorted(FIELDS))
        raise InvalidRiskRulesError(
            f"{where}.field: unknown field {name!r} (known: {known}, borrower.<name>, loan.<name>)",
            field=f"{where}.field",
        )
    listed = op in ("in", "not_in")
    if listed != isinstance(value, list):
        expected = "a list" if listed else "a single value, not a list"
        raise InvalidRiskRulesError(f"{where}.value: {op} needs {expected}", field=f"{where}.value")
    if kind == "text" and op in _ORDER_OPS:
        raise InvalidRiskRulesError(
            f"{where}.op: {name} is text; use ==, !=, in or not_in", field=f"{where}.op"
        )
    values = value if isinstance(value, list) else [value]
    converted: list[Any] = []
    for position, item in enumerate(values):
        at = f"{where}.value[{position}]" if listed else f"{where}.value"
        if kind == "number":
            converted.append(_number(item, at))
        elif isinstance(item, str):
            converted.append(item)
        else:
            raise InvalidRiskRulesError(f"{at}: {name} is text; {item!r} is not", field=at)
    wanted: Any = frozenset(converted) if listed else converted[0]
    compare = _COMPARE[op]
    numeric = kind == "number"

    if is_extra:

        def test_extra(facts: LoanFacts, as_of: date) -> bool:
            got = _coerce(get(facts, as_of), numeric)
            return got is not None and compare(got, wanted)

        return test_extra

    def test(facts: LoanFacts, as_of: date) -> bool:
        got = get(facts, as_of)
        return got is not None and compare(got, wanted)

    return test


def _is_text(sample: str) -> bool:
    try:
        Decimal(sample)
    except InvalidOperation:
        return True
    return False


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """A rule set turned into functions, ready to be applied to many loans."""

    rules: RiskRules
    tests: tuple[tuple[str, tuple[Test, ...]], ...]
    reads_extras: bool
    """Whether a condition names an extra attribute (``borrower.<name>``, ``loan.<name>``), which only the
    whole document has."""

    def group_of(self, loan: Loan, projection: Projection | None, as_of: date) -> str:
        """The risk group of ``loan``, judged on ``as_of`` (the day of assessment)."""
        return self.group_of_facts(LoanFacts.of(loan, projection), as_of)

    def group_of_facts(self, facts: LoanFacts, as_of: date) -> str:
        """:meth:`group_of` a loan's :class:`LoanFacts`."""
        for group, tests in self.tests:
            for test in tests:
                if not test(facts, as_of):
                    break
            else:
                return group
        return self.rules.default


_compiled: dict[str, CompiledRules] = {}
_COMPILED_KEPT = 256


def compile_rules(rules: RiskRules) -> CompiledRules:
    """Check a rule set beyond its shape (known fields, operators that fit them, groups that exist) and
    turn it into functions; raises :class:`InvalidRiskRulesError` naming the field.

    Compiled sets are kept by content, so that assessing slice after slice does not compile them again."""
    key = rules.to_json()
    found = _compiled.get(key)
    if found is None:
        found = _compile(rules)
        if len(_compiled) >= _COMPILED_KEPT:
            _compiled.pop(next(iter(_compiled)))
        _compiled[key] = found
    return found


def _compile(rules: RiskRules) -> CompiledRules:
    if len(set(rules.groups)) != len(rules.groups):
        raise InvalidRiskRulesError("groups: a group is listed twice", field="groups")
    if rules.default not in rules.groups:
        raise InvalidRiskRulesError(
            f"default: {rules.default!r} is not one of the groups {rules.groups}", field="default"
        )
    compiled: list[tuple[str, tuple[Test, ...]]] = []
    for index, rule in enumerate(rules.rules):
        where = f"rules[{index}]"
        if rule.group not in rules.groups:
            raise InvalidRiskRulesError(
                f"{where}.group: {rule.group!r} is not one of the groups {rules.groups}",
                field=f"{where}.group",
            )
        tests = tuple(
            _compile_condition(condition, f"{where}.all[{position}]")
            for position, condition in enumerate(rule.all)
        )
        compiled.append((rule.group, tests))
    extras = any(condition.field not in FIELDS for rule in rules.rules for condition in rule.all)
    return CompiledRules(rules, tuple(compiled), extras)
