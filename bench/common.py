"""What the bench's figures share: the written patient columns, timers, the worker protocol."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "BENCH_RESULT "
PRACTICE_ID = "bench_clinic"
# Large enough for the biggest export: capacity never decides a bench import.
PRACTICE_CAPACITY = 10_000_000
PRACTICES_YAML = f"""practices:
  - id: {PRACTICE_ID}
    name: Bench Chiropractic
    capacity: {PRACTICE_CAPACITY}
    systems: [drip_education, auto_debit, cash_plan_calculator]
"""


def written_columns() -> list[str]:
    """The patient columns an import writes (store names), in the clean CSV's order."""
    from include.patient_import.schema import DATA_COLUMNS, STORE_COLUMN

    return [STORE_COLUMN.get(c, c) for c in DATA_COLUMNS] + [
        "practice_id", "last_seen_exported_on", "created_import_id", "updated_import_id"]


DATE_COLUMNS = ("birth_date", "last_visit", "last_seen_exported_on")
KEY = ("practice_id", "third_party_acct_number")


class StageTimer:
    """Wall seconds per stage; a stage timed inside another is taken out of the outer one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stack: list[list] = []  # [label, start, nested seconds]

    @contextmanager
    def stage(self, label: str):
        self._stack.append([label, time.perf_counter(), 0.0])
        try:
            yield
        finally:
            name, start, nested = self._stack.pop()
            spent = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + spent - nested
            if self._stack:
                self._stack[-1][2] += spent

    def wrap(self, owner: object, attribute: str, label: str) -> None:
        """Time every call of `owner.attribute` under `label` (a bench-only patch)."""
        original: Callable = getattr(owner, attribute)

        def timed(*args, **kwargs):
            with self.stage(label):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)


def emit(result: dict) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)
