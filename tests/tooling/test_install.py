"""`make install`: the locked dependencies, compiled to bytecode once (the Makefile says why)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("module", ["great_expectations", "airflow", "pandas", "sqlalchemy"])
def test_the_heavy_dependencies_are_installed_with_their_bytecode(module):
    # Without it, and with PYTHONDONTWRITEBYTECODE set, every process compiles them from source again.
    source = importlib.util.find_spec(module).origin
    assert Path(importlib.util.cache_from_source(source)).is_file(), f"{module}: no bytecode; run `make install`"


def test_make_install_compiles_every_folder_of_the_projects_own_python():
    # Airflow's task processes, the DAG processor and every script import them: from source, where
    # PYTHONDONTWRITEBYTECODE is set, ~0.3 s of CPU a process (the Makefile says so).
    import re

    root = Path(__file__).resolve().parents[2]
    makefile = (root / "Makefile").read_text(encoding="utf-8")
    compiled = set(re.search(r"^PROJECT_PACKAGES := (.*)$", makefile, re.M).group(1).split())
    install = re.search(r"^install:.*?(?=^\S)", makefile, re.M | re.S).group(0)
    assert "compileall" in install and "$(PROJECT_PACKAGES)" in install
    with_python = {d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and any(d.rglob("*.py"))}
    assert with_python - {"var"} <= compiled
