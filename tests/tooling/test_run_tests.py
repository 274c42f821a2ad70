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


def _fake_checkout(tmp_path: Path, suite_status: int = 0) -> Path:
    """scripts/run_tests.sh beside stand-ins for ruff, mypy, the suite, hostile_memory.py and
    reliability.py that record their pids in `pids/` (the suite then sleeps, or ends `suite_status`)."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "run_tests.sh").write_text((ROOT / "scripts" / "run_tests.sh").read_text())
    (tmp_path / "pids").mkdir()
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    suite = "exec sleep 300" if suite_status == 0 else f"exit {suite_status}"
    stubs = {"ruff": "exit 0",
             "mypy": 'echo $$ > pids/mypy; exec sleep 300',
             "python": f'case "$1" in -m) echo $$ > pids/suite; {suite};; '
                       '*hostile_memory*) echo $$ > pids/memory; exec sleep 300;; '
                       '*) echo $$ > pids/other; exit 0;; esac'}
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return tmp_path


def _alive(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat")
    return state.exists() and state.read_text().split(") ")[-1][:1] != "Z"


def _wait_for(predicate) -> None:
    # A bounded poll for a process to get somewhere, not a timing assertion.
    for _ in range(600):
        if predicate():
            return
        time.sleep(0.05)


def _start(checkout: Path, home: Path) -> tuple[subprocess.Popen, dict[str, int]]:
    """run_tests.sh started in `checkout`, once the suite, mypy and hostile_memory.py all run."""
    import os

    script = subprocess.Popen(["bash", "scripts/run_tests.sh"], cwd=checkout,
                              env={**os.environ, "PATIENT_IMPORT_HOME": str(home)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids = checkout / "pids"
    names = ("suite", "mypy", "memory")
    _wait_for(lambda: all((pids / n).is_file() and (pids / n).read_text().strip() for n in names))
    return script, {n: int((pids / n).read_text()) for n in names}


def _stop_left(script: subprocess.Popen, started: dict[str, int]) -> None:
    import os
    import signal

    script.kill()
    for pid in started.values():
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_stopping_make_test_stops_the_suite_and_everything_started_beside_it(tmp_path):
    # SIGTERM, as make passes on when it is terminated. (Ctrl-C, passed on to the suite as SIGINT,
    # was checked by hand; as a test it raced the stand-ins' start on a loaded machine.)
    import signal

    script, started = _start(_fake_checkout(tmp_path), tmp_path / "home")
    try:
        script.send_signal(signal.SIGTERM)
        assert script.wait(timeout=60) in (130, 143)
        _wait_for(lambda: not any(_alive(pid) for pid in started.values()))
        assert [n for n, pid in started.items() if _alive(pid)] == []
    finally:
        _stop_left(script, started)


def test_the_hostile_memory_run_is_recorded_before_the_suite_starts(tmp_path):
    # A quick suite (PYTEST_ADDOPTS=one module) must not leave reliability.py finding no run.
    script, started = _start(_fake_checkout(tmp_path), tmp_path / "home")
    try:
        recorded = tmp_path / "home" / "reliability" / "hostile_memory.pid"
        assert recorded.read_text().strip() == str(started["memory"])
    finally:
        _stop_left(script, started)


def test_a_failing_suite_fails_make_test_with_its_status_and_leaves_nothing_running(tmp_path):
    import os
    import shutil

    checkout = _fake_checkout(tmp_path, suite_status=3)
    # The suite fails before the checks beside it have called setsid (as on a loaded machine): the
    # script must stop them all the same.
    slow = tmp_path / "slow_bin"
    slow.mkdir()
    (slow / "setsid").write_text(f'#!/bin/sh\ncase "$*" in *hostile_memory*) sleep 3;; esac\n'
                                 f'exec {shutil.which("setsid")} "$@"\n')
    (slow / "setsid").chmod(0o755)
    env = {**os.environ, "PATIENT_IMPORT_HOME": str(tmp_path / "home"), "PATH": f"{slow}:{os.environ['PATH']}"}
    (checkout / ".venv" / "bin" / "mypy").write_text("#!/bin/sh\necho $$ > pids/mypy\n")
    done = subprocess.run(["bash", "scripts/run_tests.sh"], cwd=checkout, env=env, capture_output=True, timeout=120)
    assert done.returncode == 3
    # The pid the script records before the suite (the stand-in may be stopped before it writes its own).
    memory = int((tmp_path / "home" / "reliability" / "hostile_memory.pid").read_text())
    _wait_for(lambda: not _alive(memory))
    assert not _alive(memory)
