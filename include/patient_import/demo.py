"""Drops the bundled demo export into the demo practice's inbox (for `make run`)."""

from __future__ import annotations

import os
import tempfile
import time
from datetime import date
from pathlib import Path

from include.patient_import import settings, storage
from include.patient_import.generator import generate_export

DEMO_PRACTICE = "demo_clinic"
DEMO_ROWS = 250


def drop_demo_export(today: date | None = None) -> str:
    day = today or date.today()
    path = settings.area("inbox", DEMO_PRACTICE) / f"Genesis Patient List {day:%Y%m%d}.csv"
    if not storage.is_local(path):
        # An object store: the export lands as one object, picked up once it has settled.
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / path.name
            generate_export(local, DEMO_ROWS, seed=day.toordinal())
            return str(storage.copy(local, path))
    path.parent.mkdir(parents=True, exist_ok=True)
    generate_export(path, DEMO_ROWS, seed=day.toordinal())
    # The file has finished landing: the inbox takes only files whose size and time have settled.
    landed = time.time() - 60
    os.utime(path, (landed, landed))
    return str(path)


if __name__ == "__main__":
    print(f"demo export dropped: {drop_demo_export()}")
