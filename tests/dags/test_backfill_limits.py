"""Backfill runs of one practice must not overlap: Airflow 3 limits a backfill's runs by the
backfill's own `max_active_runs` (not the DAG's), so every backfill example passes 1."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_backfill_example_runs_one_run_at_a_time():
    examples = []
    for path in (ROOT / "README.md", ROOT / "Makefile", ROOT / "docs" / "contract.md"):
        lines = path.read_text(encoding="utf-8").splitlines()
        # An example may wrap onto the next lines of the page.
        examples += [(path.name, " ".join(lines[at:at + 3])) for at, line in enumerate(lines)
                     if "backfill create" in line]
    assert examples
    for name, command in examples:
        assert re.search(r"--max-active-runs 1\b", command), (name, command)


def test_airflow_backfills_do_not_take_the_dags_max_active_runs():
    """Why the examples pass it: without `--max-active-runs` the CLI leaves it to the backfill's
    default (10), whatever the DAG's `max_active_runs` (1) says."""
    from airflow.cli.cli_parser import get_parser
    from airflow.models.backfill import Backfill

    base = ["backfill", "create", "--dag-id", "patient_import", "--from-date", "2026-11-01",
            "--to-date", "2026-11-03"]
    assert get_parser().parse_args(base).max_active_runs is None
    assert Backfill.__table__.c.max_active_runs.default.arg > 1
    assert get_parser().parse_args(base + ["--max-active-runs", "1"]).max_active_runs == 1
