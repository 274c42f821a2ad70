"""scripts/hostile_memory.py: inputs measured side by side (`--jobs`), reported in the corpus order.

The corpus itself runs under `make reliability`; these tests drive its scheduler with tiny forked
jobs that leave marker files, never with the real inputs."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from scripts.hostile_memory import Hostile, in_order

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]


def _forked(body) -> int:
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            status = body()
        finally:
            os._exit(status)
    return pid


def _wait_for(path: Path) -> bool:
    """Whether `path` appears; a guard against a scheduler that never starts the job that makes it."""
    for _ in range(1200):
        if path.exists():
            return True
        time.sleep(0.05)
    return False


def test_two_jobs_run_at_once_and_come_back_in_order(tmp_path):
    # Job 0 ends only after job 1 has: possible only when both run at once, and job 0's result
    # must still come first.
    def start(index: int, slot: int) -> int:
        def body() -> int:
            if index == 0 and not _wait_for(tmp_path / "1.done"):
                return 3
            (tmp_path / f"{index}.done").write_text(str(slot))
            return 0
        return _forked(body)

    got = list(in_order(4, 2, start, lambda index, slot, status: (os.waitstatus_to_exitcode(status), slot)))

    assert [index for index, _ in got] == [0, 1, 2, 3]
    assert [code for _, (code, _) in got] == [0, 0, 0, 0]
    assert {got[0][1][1], got[1][1][1]} == {0, 1}  # the two running jobs never share a slot (a home)


def test_one_job_at_a_time_with_one_slot(tmp_path):
    def start(index: int, slot: int) -> int:
        def body() -> int:
            running = tmp_path / f"running{index}"
            running.touch()
            alone = [p.name for p in tmp_path.glob("running*")] == [running.name]
            time.sleep(0.05)
            running.unlink()
            return 0 if alone and slot == 0 else 4
        return _forked(body)

    got = list(in_order(3, 1, start, lambda index, slot, status: os.waitstatus_to_exitcode(status)))

    assert got == [(0, 0), (1, 0), (2, 0)]


def test_the_jobs_named_first_start_first_and_still_come_back_in_order(tmp_path):
    started: list[int] = []

    def start(index: int, slot: int) -> int:
        started.append(index)
        return _forked(lambda: 0)

    got = list(in_order(4, 1, start, lambda index, slot, status: index, first=(3, 2)))

    assert started == [3, 2, 0, 1]
    assert got == [(0, 0), (1, 1), (2, 2), (3, 3)]


def test_other_children_of_the_process_are_never_reaped(tmp_path):
    other = _forked(lambda: 0 if _wait_for(tmp_path / "go") else 5)
    try:
        def start(index: int, slot: int) -> int:
            return _forked(lambda: 0)

        assert [index for index, _ in in_order(2, 2, start, lambda *_: None)] == [0, 1]
    finally:
        (tmp_path / "go").touch()
        done, status = os.waitpid(other, 0)  # ChildProcessError had the scheduler reaped it
    assert done == other and os.waitstatus_to_exitcode(status) == 0


def test_an_input_whose_process_wrote_nothing_is_a_failure_never_within_the_limit(tmp_path):
    from scripts.hostile_memory import _collected

    item = Hostile("x.csv", "an input", lambda path: None, frozenset())
    killed = _collected(item, tmp_path / "missing.json", signal.SIGKILL)  # a wait status: killed by SIGKILL
    (tmp_path / "error.json").write_text('{"error": "SystemExit: could not write x.csv"}')
    raised = _collected(item, tmp_path / "error.json", 0)

    for row in (killed, raised):
        assert row.name == "x.csv" and not row.within and not row.ok_codes
    assert killed.peaks["extract"].failed == "died (SIGKILL)"
    assert raised.peaks["extract"].failed == "SystemExit: could not write x.csv"
