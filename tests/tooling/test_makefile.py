"""The Makefile as a user meets it: `make help`, `make purge DAYS=0`, `make airflow ARGS=…`."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]  # runs make, uv and a migrate
ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")
# Variables of the Makefile's own plumbing, not settings a user passes.
INTERNAL = {"ROOT", "PY", "PROJECT_PACKAGES", "SHELL", "MAKEFILE_LIST", "PYTHONPATH", "HOME", "IMPORT_USAGE",
            "PATIENT_IMPORT_HOME", "AIRFLOW_HOME", "MAKE"}


def _make(*args: str, home: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for name in ("AIRFLOW_HOME", "PATIENT_IMPORT_HOME", "MAKEFLAGS", "MAKELEVEL"):
        env.pop(name, None)
    if home is not None:
        env["PATIENT_IMPORT_HOME"] = str(home)
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], env=env, capture_output=True,
                          text=True, **kwargs)


def test_help_lists_every_target_and_setting():
    targets = re.search(r"^\.PHONY:(.*)$", MAKEFILE, re.M).group(1).split()
    settings = (set(re.findall(r"\$\(([A-Z][A-Z0-9_]*)\)", MAKEFILE))
                | set(re.search(r"^export ([A-Z_ ]+)$", MAKEFILE, re.M).group(1).split())) - INTERNAL

    out = _make("help").stdout

    assert {t for t in targets if not re.search(rf"make {re.escape(t)}\b", out)} == set()
    assert {s for s in settings if s not in out} == set()
    assert "PATIENT_IMPORT_AIRFLOW_PORT" in out


def test_purge_with_days_0_says_what_is_wrong_in_one_line(tmp_path):
    done = _make("purge", "DAYS=0", home=tmp_path)

    assert done.returncode != 0
    assert "usage:" not in done.stdout + done.stderr
    message = [line for line in done.stderr.splitlines() if not line.startswith("make")]
    assert len(message) == 1 and "DAYS" in message[0] and "at least 1" in message[0]


def test_airflow_without_args_prints_how_to_call_it(tmp_path):
    done = _make("-o", "airflow-db", "airflow", home=tmp_path)
    assert done.returncode != 0 and 'make airflow ARGS="' in done.stdout


def test_airflow_runs_the_cli_in_the_projects_environment(tmp_path):
    done = _make("airflow", "ARGS=config get-value core dags_folder", home=tmp_path, timeout=280)

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == str(ROOT / "dags")
    assert (tmp_path / "airflow" / "airflow.db").is_file()  # its own Airflow home, migrated; not ~/airflow


def test_undo_without_import_prints_how_to_call_it(tmp_path):
    done = _make("undo", home=tmp_path)
    assert done.returncode != 0 and "usage: make undo IMPORT=" in done.stdout


def test_undo_of_an_unknown_import_says_so_in_one_line(tmp_path):
    done = _make("undo", "IMPORT=demo_clinic_20261120_0123456789ab", home=tmp_path, timeout=280)

    assert done.returncode != 0
    # Before it, Airflow (which reads the `patient_store` connection) may say where its config is.
    message = [line for line in done.stderr.splitlines() if not line.startswith("make")]
    assert message[-1] == "undo: no import demo_clinic_20261120_0123456789ab"


@pytest.mark.parametrize("target", ["undo", "import"])
@pytest.mark.parametrize("shape", ['x"; touch {marker}; echo "', "$(shell touch {marker})x"])
def test_a_quote_semicolon_or_make_function_in_a_value_is_part_of_the_value_never_code(tmp_path, target, shape):
    marker = tmp_path / "ran"
    hostile = shape.format(marker=marker)
    values = {"undo": [f"IMPORT={hostile}"], "import": ["PRACTICE=demo_clinic", f"FILE={hostile}"]}[target]
    done = _make("-s", target, *values, home=tmp_path / "home")
    assert done.returncode != 0
    assert not marker.exists()
    # The value reached the command whole, and was refused as a value.
    assert ("not an import id" if target == "undo" else "export_file") in done.stdout + done.stderr


def test_an_import_id_that_looks_like_an_option_is_refused_as_an_id(tmp_path):
    done = _make("-s", "undo", "IMPORT=-h", home=tmp_path / "home")
    assert done.returncode != 0 and "not an import id" in done.stderr and "usage:" not in done.stdout
