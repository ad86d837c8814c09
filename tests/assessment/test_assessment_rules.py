"""Risk rules: the rule language, its checks, and the groups it gives."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from assessment_loans import BORROWER, make_loan
from hypothesis import given
from hypothesis import strategies as st

from tranche.assessment.errors import InvalidRiskRulesError
from tranche.assessment.projection import project
from tranche.assessment.rules import DEFAULT_RULES, RiskRules, compile_rules, parse_risk_rules
from tranche.shared.loan import Borrower

TODAY = date(2026, 2, 1)


def rules(*conditions: dict[str, Any], group: str = "A", default: str = "C") -> RiskRules:
    return parse_risk_rules({"default": default, "rules": [{"group": group, "all": list(conditions)}]})


def group(rule_set: RiskRules, borrower: Borrower = BORROWER, as_of: date = TODAY, **loan: Any) -> str:
    subject = make_loan(borrower=borrower, **loan)
    return compile_rules(rule_set).group_of(subject, project(subject), as_of)


def test_the_first_rule_whose_conditions_all_hold_gives_the_group() -> None:
    rule_set = parse_risk_rules(
        {
            "rules": [
                {"group": "A", "all": [{"field": "credit_score", "op": ">=", "value": 800}]},
                {"group": "B", "all": [{"field": "credit_score", "op": ">=", "value": 700}]},
                {"group": "A", "all": [{"field": "credit_score", "op": ">=", "value": 600}]},
            ]
        }
    )
    assert group(rule_set) == "B"  # 720: the second rule, though the third would also hold


def test_no_matching_rule_gives_the_default_group() -> None:
    assert group(rules({"field": "age", "op": "<", "value": 18}, default="B")) == "B"


def test_income_to_payment_compares_monthly_income_with_the_next_payment() -> None:
    # 250,000 of income against a next payment of 33,214 is a ratio of about 7.53.
    assert group(rules({"field": "income_to_payment", "op": ">=", "value": "7.5"})) == "A"
    assert group(rules({"field": "income_to_payment", "op": ">=", "value": 7.6})) == "C"


def test_days_past_due_count_from_an_unpaid_next_payment_date_to_the_day_of_assessment() -> None:
    late = rules({"field": "days_past_due", "op": ">", "value": 30}, group="C", default="A")
    assert group(late, as_of=date(2026, 3, 17)) == "A"  # 30 days after 15 February: not yet
    assert group(late, as_of=date(2026, 3, 18)) == "C"
    assert group(late, as_of=date(2026, 2, 1)) == "A"  # not due yet


def test_days_past_due_beyond_thirty_fall_in_group_c_by_default() -> None:
    compiled = compile_rules(DEFAULT_RULES)
    loan = make_loan()
    assert compiled.group_of(loan, project(loan), date(2026, 2, 1)) == "A"
    assert compiled.group_of(loan, project(loan), date(2026, 3, 20)) == "C"


def test_country_lists_and_text_fields_compare_as_text() -> None:
    baltic = rules({"field": "country", "op": "in", "value": ["EE", "LV", "LT"]})
    assert group(baltic) == "A"
    assert group(baltic, borrower=Borrower("FI", 35, 250_000, 720)) == "C"
    assert group(rules({"field": "schedule_type", "op": "==", "value": "annuity"})) == "A"


def test_extra_attributes_of_the_borrower_and_the_loan_can_be_ruled_on() -> None:
    employed = rules(
        {"field": "borrower.employment", "op": "==", "value": "permanent"},
        {"field": "loan.ltv", "op": "<=", "value": "0.8"},
    )
    borrower = Borrower("EE", 35, 250_000, 720, extra={"employment": "permanent"})
    assert group(employed, borrower=borrower, extra={"ltv": "0.75"}) == "A"
    assert group(employed, borrower=borrower, extra={"ltv": 0.95}) == "C"
    # An attribute the loan does not have never satisfies a condition.
    assert group(employed, borrower=borrower) == "C"


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (
            {"rules": [{"group": "A", "all": [{"field": "credit", "op": ">", "value": 1}]}]},
            "rules[0].all[0].field",
        ),
        (
            {"rules": [{"group": "A", "all": [{"field": "country", "op": ">", "value": "EE"}]}]},
            "rules[0].all[0].op",
        ),
        ({"rules": [{"group": "A", "all": [{"field": "age", "op": "~", "value": 1}]}]}, "rules[0].all[0].op"),
        (
            {"rules": [{"group": "A", "all": [{"field": "age", "op": ">", "value": {}}]}]},
            "rules[0].all[0].value",
        ),
        (
            {"rules": [{"group": "A", "all": [{"field": "age", "op": ">", "value": "old"}]}]},
            "rules[0].all[0].value",
        ),
        (
            {"rules": [{"group": "A", "all": [{"field": "age", "op": "in", "value": 3}]}]},
            "rules[0].all[0].value",
        ),
        (
            {"rules": [{"group": "A", "all": [{"field": "age", "op": "in", "value": [1, "x"]}]}]},
            "rules[0].all[0].value[1]",
        ),
        (
            {"rules": [{"group": "A", "all": [{"field": "country", "op": "==", "value": 3}]}]},
            "rules[0].all[0].value",
        ),
        ({"rules": [{"group": "D", "all": []}]}, "rules[0].group"),
        ({"rules": [{"group": "A"}]}, "rules[0].all"),
        ({"default": "X"}, "default"),
        ({"groups": ["A", "A"], "default": "A"}, "groups"),
        ({"rulez": []}, "rulez"),
    ],
)
def test_a_broken_rule_set_is_refused_with_the_path_of_the_offending_field(
    document: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRiskRulesError) as caught:
        parse_risk_rules(json.dumps(document))
    assert caught.value.field == field
    assert field in caught.value.message


def test_text_that_is_not_json_is_refused() -> None:
    with pytest.raises(InvalidRiskRulesError):
        parse_risk_rules("{not json")


def test_custom_group_names_are_allowed_when_declared() -> None:
    rule_set = parse_risk_rules(
        {"groups": ["prime", "subprime"], "default": "subprime", "rules": [{"group": "prime", "all": []}]}
    )
    assert group(rule_set) == "prime"


@given(st.integers(300, 900), st.integers(300, 900))
def test_a_score_threshold_splits_borrowers_exactly_at_the_threshold(score: int, threshold: int) -> None:
    rule_set = rules({"field": "credit_score", "op": ">=", "value": threshold})
    expected = "A" if score >= threshold else "C"
    assert group(rule_set, borrower=Borrower("EE", 35, 250_000, score)) == expected


def test_a_rule_set_survives_a_round_trip_through_json() -> None:
    assert parse_risk_rules(DEFAULT_RULES.to_json()) == DEFAULT_RULES


NUMERIC = ["credit_score", "age", "income_monthly", "term_months"]
OPS = {
    "==": int.__eq__,
    "!=": int.__ne__,
    "<": int.__lt__,
    "<=": int.__le__,
    ">": int.__gt__,
    ">=": int.__ge__,
}


@st.composite
def rule_sets(draw: st.DrawFn) -> dict[str, Any]:
    conditions = st.fixed_dictionaries(
        {"field": st.sampled_from(NUMERIC), "op": st.sampled_from(sorted(OPS)), "value": st.integers(0, 1000)}
    )
    rules = st.fixed_dictionaries(
        {"group": st.sampled_from(["A", "B", "C"]), "all": st.lists(conditions, max_size=3)}
    )
    return {"default": draw(st.sampled_from(["A", "B", "C"])), "rules": draw(st.lists(rules, max_size=5))}


@given(rule_sets(), st.integers(300, 900), st.integers(18, 90), st.integers(0, 1000), st.integers(1, 60))
def test_the_group_is_that_of_the_first_rule_whose_conditions_all_hold(
    document: dict[str, Any], score: int, age: int, income: int, term: int
) -> None:
    facts = {"credit_score": score, "age": age, "income_monthly": income, "term_months": term}
    expected = next(
        (
            rule["group"]
            for rule in document["rules"]
            if all(OPS[c["op"]](facts[c["field"]], c["value"]) for c in rule["all"])
        ),
        document["default"],
    )
    borrower = Borrower("EE", age, income, score)
    assert group(parse_risk_rules(document), borrower=borrower, term=term) == expected
