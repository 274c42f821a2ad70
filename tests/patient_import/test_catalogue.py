"""The rule catalogue is the one place for each problem code, and everything reads it."""

from __future__ import annotations

import re
import string
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from include.patient_import import catalogue as c
from include.patient_import import problems as p
from include.patient_import.normalize import account_number_problem, normalize_export
from include.patient_import.practices import Practice
from include.patient_import.rules import (
    CODE,
    accountless_rejection,
    export_date_rejection,
    passes_practice_rules,
    too_many_rejected,
    unknown_practice,
)
from include.patient_import.schema import ACCOUNT_NUMBER_PATTERN, FIELDS, REQUIRED_FIELDS, ROW_NUMBER
from include.patient_import.suites import build_suites
from include.patient_import.transform import upload_rows
from tests.patient_import.frames import normalised

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "include" / "patient_import"


def _readme_rule_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### Where each rule lives")
    return text[start:text.index("\n## ", start)]


def test_every_catalogue_code_is_in_the_readme_where_each_rule_lives():
    section = _readme_rule_section()
    missing = [code for code in c.RULES if f"`{code}`" not in section]
    assert missing == [], "add these codes to the README's \"Where each rule lives\""


def test_the_readme_lists_no_code_the_catalogue_does_not_hold():
    table = _readme_rule_section().split("| code |", 1)[1]
    listed = re.findall(r"^\| `([a-z_]+)` \|", table, re.M)
    assert sorted(listed) == sorted(c.RULES)


def test_every_code_constant_of_problems_is_a_catalogue_code():
    constants = {name: value for name, value in vars(p).items() if name.isupper() and isinstance(value, str)
                 and name not in {"INSERTED", "UPDATED", "UNCHANGED", "SKIPPED", "REJECTED", "ACCOUNT_NUMBER_PATTERN"}}
    assert constants and set(constants.values()) <= set(c.RULES)


def test_the_precedence_is_row_errors_then_skips_all_row_scoped():
    assert c.PRECEDENCE == c.ROW_ERROR_CODES + c.SKIP_CODES
    assert all(c.rule(code).scope is c.Scope.ROW for code in c.PRECEDENCE)
    assert [c.rank(code) for code in c.PRECEDENCE] == list(range(len(c.PRECEDENCE)))
    assert all(c.rule(code).scope is c.Scope.FILE for code in c.FILE_ERROR_CODES)


def test_severity_comes_from_the_catalogue_and_an_unknown_code_is_a_warning():
    assert p.Problem(code=p.DUPLICATE_ROW, message="m").severity == "info"
    assert p.Problem(code=p.CAPACITY_EXCEEDED, message="m").severity == "error"
    assert p.Problem(code="invalid_email", message="m").severity == "warning"
    assert c.severity_of("not_a_code") is c.Severity.WARNING


def test_the_suites_are_exactly_the_catalogue_expectations():
    built = build_suites()
    assert set(built) == set(c.SUITE_NAMES)
    for name, suite in built.items():
        codes = [e["meta"]["code"] for e in suite["expectations"]]
        assert codes == [code for code, _ in c.expectations(name)]
        assert all(c.rule(code).expectations for code in codes)
    rows = built[c.PATIENT_ROWS]["expectations"]
    assert [e["meta"]["field"] for e in rows if e["meta"]["code"] == p.MISSING_REQUIRED_FIELD] == list(REQUIRED_FIELDS)
    assert any(e["kwargs"].get("regex") == ACCOUNT_NUMBER_PATTERN for e in rows)
    share = built[c.REJECTED_SHARE]["expectations"][0]
    assert share["kwargs"]["max_value"] == c.MAX_REJECTED_SHARE


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_message_template_renders_with_its_placeholders():
    for rule in c.RULES.values():
        for template in (rule.message, *dict(rule.cases).values()):
            values = {name: 1 for name in _placeholders(template)}
            assert template.format(**values)


def _literal_parts(template: str) -> list[str]:
    return [text.strip() for text, *_ in string.Formatter().parse(template) if len(text.strip()) >= 30]


def test_no_module_restates_a_catalogue_message():
    sources = {path.name: path.read_text(encoding="utf-8") for path in PACKAGE.glob("*.py")
               if path.name != "catalogue.py"}
    restated = [(rule.code, name) for rule in c.RULES.values()
                for template in (rule.message, *dict(rule.cases).values())
                for part in _literal_parts(template)
                for name, source in sources.items() if part in source]
    assert restated == []


def test_every_warning_the_normaliser_gives_is_a_catalogue_code_with_its_message():
    bad = {f.name: "??" for f in FIELDS}
    bad |= {"account_number": "1", "last_name": "Ã©", "zip": "1234"}
    frame = pd.DataFrame([{ROW_NUMBER: 2, **bad}])
    listed = normalize_export(frame, today=date(2026, 1, 1)).problems.listed
    assert len(listed) >= 5
    for code, field, message in listed[["code", "field", "message"]].itertuples(index=False):
        assert code in c.RULES, code
        assert message == c.message(code, label=c.field_label(field))


def test_an_invalid_account_numbers_message_is_the_catalogue_case():
    assert account_number_problem("1.23E+11") == c.message(p.INVALID_ACCOUNT_NUMBER, "scientific")
    assert account_number_problem("1" * 40) == "the account number has more than 32 digits"
    assert account_number_problem("12-3") == c.message(p.INVALID_ACCOUNT_NUMBER)


def test_file_decisions_of_the_contract_are_rules():
    assert unknown_practice().code == p.UNKNOWN_PRACTICE
    assert export_date_rejection(date(2026, 1, 2), date(2026, 1, 1)).message == \
        "the export date 2026-01-02 is in the future"
    assert export_date_rejection(date(2026, 1, 1), date(2026, 1, 1)) is None
    assert accountless_rejection(0) is None
    assert accountless_rejection(3).code == p.EXISTING_PATIENTS_WITHOUT_ACCOUNT_NUMBER
    rejection = too_many_rejected(pd.Series([p.MISSING_REQUIRED_FIELD, None, None, p.INVALID_ACCOUNT_NUMBER]))
    assert rejection.details == {"rejected_rows": 2, "read": 4}
    assert rejection.message.startswith("2 of 4 rows (50%) were rejected; more than a quarter")


@pytest.mark.parametrize("practice, kept", [
    (Practice(id="c", name="C", systems=frozenset({"drip_education"})), ["1", "2"]),
    (Practice(id="c", name="C", systems=frozenset({"auto_debit"})), ["1"]),
    (Practice(id="c", name="C", systems=frozenset({"auto_debit"}), payment_plan_accounts=frozenset({"2", "4"})), []),
    (Practice(id="c", name="C", systems=frozenset({"auto_debit"}), payment_plan_accounts=frozenset({"1", "2"})),
     ["1"]),
    (Practice(id="c", name="C", systems=frozenset({"drip_education", "auto_debit"}),
              payment_plan_accounts=frozenset({"2"})), ["1", "2"]),
])
def test_the_upload_file_keeps_the_rows_the_practice_rules_keep(practice, kept):
    frame = normalised({"account_number": "1"}, {"account_number": "2", "status": "inactive"},
                       {"account_number": "3"}, {"account_number": "4"})
    frame[CODE] = [None, None, p.DUPLICATE_ROW, p.MISSING_REQUIRED_FIELD]
    assert upload_rows(frame, practice)["account_number"].tolist() == kept
    assert passes_practice_rules(frame, practice).tolist() == [a in kept for a in ("1", "2", "3", "4")]


def _package_imports(module: str) -> set[str]:
    import ast

    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    found |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return {name for name in found if name.startswith("include.")}


def test_the_catalogue_and_the_schema_sit_under_everything():
    assert _package_imports("schema") == set()
    assert _package_imports("catalogue") == {"include.patient_import.schema"}
