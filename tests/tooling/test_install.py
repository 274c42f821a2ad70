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
