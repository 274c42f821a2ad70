"""Practice registries (SPEC §1, `practices.yml`) for tests and scripts, written from a few values.

    registry_yaml(practice("demo_clinic", "Demo"), practice("small_clinic", "Small", capacity=5))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml


def practice(practice_id: str, name: str, *, capacity: int = 1000,
             systems: Iterable[str] = ("drip_education",), **more: Any) -> dict[str, Any]:
    """One registry entry; `more` adds keys such as `payment_plan_accounts` or `upload_extra_columns`."""
    return {"id": practice_id, "name": name, "capacity": capacity, "systems": list(systems), **more}


def registry_yaml(*practices: dict[str, Any]) -> str:
    """The text of a `practices.yml` listing `practices` (entries from `practice`)."""
    return yaml.safe_dump({"practices": list(practices)}, sort_keys=False)
