"""Drops the bundled demo export into the demo practice's inbox (for `make run`)."""

from __future__ import annotations

import os
import tempfile
import time
from datetime import date
from pathlib import Path

from include.patient_import import settings, storage
from tools.generator import generate_export

DEMO_PRACTICE = "demo_clinic"
DEMO_ROWS = 250


def drop_demo_export(today: date | None = None, practice: str = DEMO_PRACTICE) -> str:
    """Write the demo export (DEMO_ROWS rows, a few bad on purpose) into `practice`'s inbox; returns its path."""
    day = today or date.today()
    path = settings.area("inbox", practice) / f"Genesis Patient List {day:%Y%m%d}.csv"
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / path.name
        generate_export(local, DEMO_ROWS, seed=day.toordinal())
        storage.copy(local, path)  # lands whole, on a disk or in an object store
    if storage.is_local(path):
        # The file has finished landing: the inbox takes only files whose size and time have
        # settled (an object's time is its upload; it is picked up once that has settled).
        landed = time.time() - 60
        os.utime(path, (landed, landed))
    return str(path)


if __name__ == "__main__":
    print(f"demo export dropped: {drop_demo_export()}")
