"""The Celery configuration that preloads (include/celery_config.py): a Celery worker imports the
tasks' modules once, before it forks its pool; the other components that read the configuration
import nothing heavy, and the configuration is Airflow's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from include.executors import PRELOADED_MODULES

ROOT = Path(__file__).resolve().parents[2]
OPTION = "include.celery_config.CELERY_CONFIG"
HEAVY = ("great_expectations", "pyarrow", "include.patient_import.validate", "include.patient_import.load")


def _probe(option: str) -> dict:
    """In a fresh interpreter: Airflow's Celery app with `option` as `[celery] celery_config_options`,
    the modules loaded before and after what `celery worker` does before it forks its pool."""
    probe = (
        "import json, sys\n"
        "from airflow.providers.celery.executors.celery_executor_utils import app\n"
        "from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG\n"
        f"modules = {PRELOADED_MODULES!r}\n"
        "before = [m for m in modules if m in sys.modules]\n"
        "app.loader.init_worker()  # Celery's WorkController, before the prefork pool starts\n"
        "after = [m for m in modules if m in sys.modules]\n"
        "same = all(app.conf[k] == v for k, v in DEFAULT_CELERY_CONFIG.items())\n"
        "print(json.dumps({'before': before, 'after': after, 'default_config': same}))\n"
    )
    env = os.environ | {"AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": option}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_celery_worker_preloads_every_task_module_before_its_pool_forks():
    found = _probe(OPTION)

    assert found["after"] == list(PRELOADED_MODULES)
    # The scheduler and the API server read the same configuration: they import none of it.
    assert not set(HEAVY) & set(found["before"]), found["before"]
    assert found["default_config"], "the configuration must stay Airflow's default"

