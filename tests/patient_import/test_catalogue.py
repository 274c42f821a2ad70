"""The rule catalogue is the one place for each problem code, and everything reads it."""

from __future__ import annotations

import ast
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


# ---------------------------------------------------------------- office-facing messages come from here

# The constructors whose message the office (or the operator who triggered a run) reads, with the
# position of `message` among their arguments; subclasses defined in the package are found below.
_MESSAGE_CARRIERS = {"ExportRejected": 1, "InputRefused": 1, "Problem": 1}
# (module, line text) of constructions that may keep a message of their own: none today. Add one
# only with a comment saying why its text cannot be a catalogue case.
_OWN_MESSAGES: frozenset[tuple[str, str]] = frozenset()


def _module_trees() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(PACKAGE.glob("*.py"))}


def _carriers(trees: dict[str, ast.Module]) -> dict[str, int]:
    """`_MESSAGE_CARRIERS` and every package class deriving from one, with its message's position."""
    carriers = dict(_MESSAGE_CARRIERS)
    classes = [node for tree in trees.values() for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    changed = True
    while changed:
        changed = False
        for cls in classes:
            bases = {b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in cls.bases}
            if cls.name in carriers or not bases & set(carriers):
                continue
            init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
            names = [a.arg for a in init.args.args[1:]] if init else []
            carriers[cls.name] = names.index("message") if "message" in names else carriers[bases.pop()]
            changed = True
    return carriers


def _written_out(node: ast.AST | None) -> bool:
    """A message written where it is built: a string literal, an f-string, or one joined or formatted."""
    if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return True
    if isinstance(node, ast.BinOp):
        return _written_out(node.left) or _written_out(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _written_out(node.func.value)
    return False


def _callee(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def test_no_module_but_the_catalogue_writes_an_office_facing_message():
    trees = _module_trees()
    carriers = _carriers(trees)
    assert {"ExportRejected", "InputRefused", "Problem", "_QuotingBroken"} <= set(carriers)
    written = []
    for module, tree in trees.items():
        if module == "catalogue":
            continue
        source = (PACKAGE / f"{module}.py").read_text(encoding="utf-8").splitlines()
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and _callee(n) in carriers):
            position = carriers[_callee(call)]
            message = next((k.value for k in call.keywords if k.arg == "message"),
                           call.args[position] if len(call.args) > position else None)
            place = (module, source[call.lineno - 1].strip())
            if _written_out(message) and place not in _OWN_MESSAGES:
                written.append(f"{module}.py:{call.lineno}")
    assert written == [], "take these messages from catalogue.message(code, case, ...)"


def test_the_ast_check_sees_a_message_written_out():
    tree = ast.parse('ExportRejected(CODE, f"row {row} is bad")\np.Problem(code=C, message="x" + y)\n'
                     'InputRefused(C, "{}".format(n))\nExportRejected(C, catalogue.message(C, "case"))\n')
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _callee(n) in _MESSAGE_CARRIERS]
    flags = [_written_out(next((k.value for k in c.keywords if k.arg == "message"), None) or c.args[1])
             for c in sorted(calls, key=lambda c: c.lineno)]
    assert flags == [True, True, True, False]


def test_every_case_a_module_names_is_in_the_catalogue():
    named = []
    for module, tree in _module_trees().items():
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and _callee(call) == "message" and len(call.args) >= 2
                    and isinstance(call.args[1], ast.Constant) and isinstance(call.args[1].value, str)):
                continue
            code = call.args[0]
            name = code.attr if isinstance(code, ast.Attribute) else getattr(code, "id", None)
            if name is None or not hasattr(c, name):
                continue  # a code held in a variable (`exc.code`): rendered by the tests of its module
            named.append((module, getattr(c, name), call.args[1].value))
    assert len(named) >= 30
    missing = [(m, code, case) for m, code, case in named if case not in dict(c.rule(code).cases)]
    assert missing == []


def test_every_case_of_the_catalogue_is_used_by_a_module():
    literals = {node.value for module, tree in _module_trees().items() if module != "catalogue"
                for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    unused = [(rule.code, case) for rule in c.RULES.values() for case, _ in rule.cases if case not in literals]
    assert unused == []


def test_a_code_written_twice_is_refused_not_overridden():
    from include.patient_import import catalogue

    rule = next(iter(catalogue.RULES.values()))
    with pytest.raises(ValueError, match="twice"):
        catalogue._once(iter([rule, rule]))
