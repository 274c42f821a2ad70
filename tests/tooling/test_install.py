"""`make install`: the locked dependencies, compiled to bytecode once (the Makefile says why)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("module", ["great_expectations", "airflow", "pandas", "sqlalchemy"])
def test_the_heavy_dependencies_are_installed_with_their_bytecode(module):
    # Without it, and with PYTHONDONTWRITEBYTECODE set, every process compiles them from source again.
    source = importlib.util.find_spec(module).origin
    assert Path(importlib.util.cache_from_source(source)).is_file(), f"{module}: no bytecode; run `make install`"


ROOT = Path(__file__).resolve().parents[2]


def _project_packages() -> list[str]:
    """The Makefile's PROJECT_PACKAGES: the folders `make install` compiles."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return re.search(r"^PROJECT_PACKAGES := (.*)$", makefile, re.M).group(1).split()


def test_make_install_compiles_every_folder_of_the_projects_own_python():
    # Airflow's task processes, the DAG processor and every script import them: from source, where
    # PYTHONDONTWRITEBYTECODE is set, ~0.3 s of CPU a process (the Makefile says so).
    root = ROOT
    makefile = (root / "Makefile").read_text(encoding="utf-8")
    compiled = set(_project_packages())
    install = re.search(r"^install:.*?(?=^\S)", makefile, re.M | re.S).group(0)
    assert "compileall" in install and "$(PROJECT_PACKAGES)" in install
    with_python = {d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and any(d.rglob("*.py"))}
    assert with_python - {"var"} <= compiled


def test_a_project_file_that_does_not_compile_is_named_and_does_not_stop_make_install(tmp_path):
    # A work-in-progress file or a hostile fixture must not stop `make install`, and with it every
    # target that runs it; the others are still compiled.
    root = ROOT
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(root / "Makefile", project / "Makefile")
    (project / ".venv" / "bin").mkdir(parents=True)
    (project / ".venv" / "bin" / "python").symlink_to(sys.executable)
    for folder in _project_packages():
        (project / folder).mkdir()
    (project / "include" / "fine.py").write_text("VALUE = 1\n", encoding="utf-8")
    (project / "tests" / "broken.py").write_text("def broken(:\n", encoding="utf-8")
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "uv").write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    (stub / "uv").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}
    env.update(PATH=f"{stub}:{env['PATH']}", HOME=str(tmp_path))

    done = subprocess.run(["make", "--no-print-directory", "-C", str(project), "install"], env=env,
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "broken.py" in done.stdout + done.stderr and "not compiled to bytecode" in done.stderr
    assert Path(importlib.util.cache_from_source(str(project / "include" / "fine.py"))).is_file()
