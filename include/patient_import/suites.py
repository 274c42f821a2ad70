"""The Great Expectations suites in `expectations/`, written from the rule catalogue.

The suites are versioned JSON data; this module is the one place that writes them, from the
expectations `catalogue.py` gives each code, so the required fields and the rule thresholds cannot
drift from the catalogue and `schema.py`. Run `make suites` (`python -m include.patient_import.suites`)
after changing either; a test fails while the committed JSON differs from what this builds.

Every expectation's `meta` names the problem `code` (and `field`) it decides; the validation code
maps failures to outcomes through that meta and does not re-check the data itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from include.patient_import import catalogue as c
from include.patient_import.catalogue import (  # noqa: F401 - the names the stages use
    ACCOUNT_DATA_VARIANTS,
    CAPACITY_REMAINING,
    EARLIER_COPIES,
    EXPORT_COLUMNS,
    IS_NEW,
    PATIENT_ROWS,
    PRACTICE_CAPACITY,
    REJECTED,
    REJECTED_SHARE,
)
from include.patient_import.settings import EXPECTATIONS_DIR


def _document(code: str, expectation: c.Expectation) -> dict:
    meta = {"code": code} | ({"field": expectation.field} if expectation.field else {})
    return {"type": expectation.type, "kwargs": dict(expectation.kwargs), "meta": meta}


def build_suites() -> dict[str, dict]:
    """Every suite as the JSON document stored in `expectations/<name>.json`: the expectations of
    the rule catalogue, grouped by suite."""
    return {name: {"name": name, "expectations": [_document(code, e) for code, e in c.expectations(name)],
                   "meta": {"generated_by": "include.patient_import.suites"}}
            for name in c.SUITE_NAMES}


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
