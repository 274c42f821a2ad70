"""`make test` (scripts/run_tests.sh): the hostile-memory figures measured beside the suite and read after it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scripts.hostile_memory import read_recorded

ROOT = Path(__file__).resolve().parents[2]


def test_the_recorded_figures_are_read_once_their_run_has_ended(tmp_path):
    (tmp_path / "hostile_memory.pid").write_text("1", encoding="utf-8")  # init: alive while we wait

    def finish():
        time.sleep(0.3)
        (tmp_path / "hostile_memory.txt").write_text("18 inputs, 18 within 2 GB\n", encoding="utf-8")
        (tmp_path / "hostile_memory.json").write_text(json.dumps({"returncode": 1}), encoding="utf-8")

    threading.Thread(target=finish).start()
    assert read_recorded(tmp_path, poll_seconds=0.05) == (1, "18 inputs, 18 within 2 GB\n")


def test_a_run_that_ended_without_its_figures_is_a_failure_not_a_wait(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "hostile_memory.pid").write_text(gone.stdout.strip(), encoding="utf-8")
    with pytest.raises(RuntimeError, match="ended without its figures"):
        read_recorded(tmp_path, poll_seconds=0.05)


def test_no_recorded_run_is_said_as_such(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_recorded(tmp_path)
