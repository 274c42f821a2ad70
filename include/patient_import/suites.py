"""The Great Expectations suites in `expectations/`, built from the canonical schema.

The suites are versioned JSON data; this module is the one place that writes them, so the required
fields and the rule thresholds cannot drift from `schema.py`. Run
`python -m include.patient_import.suites` after changing the schema; a test fails while the
committed JSON differs from what this builds.

Every expectation's `meta` names the problem `code` (and `field`) it decides; the validation code
maps failures to outcomes through that meta and does not re-check the data itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from include.patient_import import problems as p
from include.patient_import.schema import REQUIRED_FIELDS
from include.patient_import.settings import EXPECTATIONS_DIR

# Columns the validation code derives for the row suite (see validate.check_frame).
ACCOUNT_DATA_VARIANTS = "account_data_variants"  # distinct normalised rows sharing the account number
EARLIER_COPIES = "earlier_copies"  # identical rows above this one
REJECTED = "rejected"  # 1 when a row error applies
IS_NEW = "is_new"  # 1 when the row would insert a patient

ACCOUNT_NUMBER_PATTERN = r"^(?:0|[1-9][0-9]{0,31})$"  # digits, zeros stripped; no capture group: pandas warns
MAX_REJECTED_SHARE = 0.25  # SPEC §3 rule 5: more than this and the file is probably the wrong one
CAPACITY_REMAINING = "capacity_remaining"

EXPORT_COLUMNS = "export_columns"
PATIENT_ROWS = "patient_rows"
REJECTED_SHARE = "rejected_share"
PRACTICE_CAPACITY = "practice_capacity"


def _expectation(kind: str, code: str, field: str | None = None, **kwargs) -> dict:
    meta = {"code": code} | ({"field": field} if field else {})
    return {"type": kind, "kwargs": kwargs, "meta": meta}


def build_suites() -> dict[str, dict]:
    """Every suite as the JSON document stored in `expectations/<name>.json`."""
    rows = [
        _expectation("expect_column_values_to_not_be_null", p.MISSING_REQUIRED_FIELD, field, column=field)
        for field in REQUIRED_FIELDS
    ]
    rows += [
        _expectation("expect_column_values_to_match_regex", p.INVALID_ACCOUNT_NUMBER, "account_number",
                     column="account_number", regex=ACCOUNT_NUMBER_PATTERN),
        _expectation("expect_column_values_to_be_between", p.DUPLICATE_ACCOUNT_NUMBER, "account_number",
                     column=ACCOUNT_DATA_VARIANTS, max_value=1),
        _expectation("expect_column_values_to_be_between", p.DUPLICATE_ROW, "account_number",
                     column=EARLIER_COPIES, max_value=0),
    ]
    suites = {
        EXPORT_COLUMNS: [
            _expectation("expect_table_columns_to_match_set", p.MISSING_REQUIRED_COLUMNS,
                         column_set=list(REQUIRED_FIELDS), exact_match=False),
        ],
        PATIENT_ROWS: rows,
        REJECTED_SHARE: [
            _expectation("expect_column_mean_to_be_between", p.TOO_MANY_REJECTED_ROWS,
                         column=REJECTED, min_value=0, max_value=MAX_REJECTED_SHARE),
        ],
        PRACTICE_CAPACITY: [
            _expectation("expect_column_sum_to_be_between", p.CAPACITY_EXCEEDED,
                         column=IS_NEW, min_value=0, max_value={"$PARAMETER": CAPACITY_REMAINING}),
        ],
    }
    return {name: {"name": name, "expectations": exps, "meta": {"generated_by": "include.patient_import.suites"}}
            for name, exps in suites.items()}


def suite_path(name: str) -> Path:
    return EXPECTATIONS_DIR / f"{name}.json"


def load_suite(name: str) -> dict:
    return json.loads(suite_path(name).read_text(encoding="utf-8"))


def render(suite: dict) -> str:
    return json.dumps(suite, indent=2, sort_keys=True) + "\n"


def write_suites() -> list[Path]:
    EXPECTATIONS_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for name, suite in build_suites().items():
        path = suite_path(name)
        path.write_text(render(suite), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_suites():
        print(path.relative_to(EXPECTATIONS_DIR.parent))
    sys.exit(0)
