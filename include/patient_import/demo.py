"""Drops the bundled demo export into the demo practice's inbox (for `make run`)."""

from __future__ import annotations

import os
import time
from datetime import date

from include.patient_import import settings
from include.patient_import.generator import generate_export

DEMO_PRACTICE = "demo_clinic"
DEMO_ROWS = 250


def drop_demo_export(today: date | None = None) -> str:
    inbox = settings.area("inbox", DEMO_PRACTICE)
    inbox.mkdir(parents=True, exist_ok=True)
    day = today or date.today()
    path = inbox / f"Genesis Patient List {day:%Y%m%d}.csv"
    generate_export(path, DEMO_ROWS, seed=day.toordinal())
    # The file has finished landing: the inbox takes only files whose size and time have settled.
    landed = time.time() - 60
    os.utime(path, (landed, landed))
    return str(path)


if __name__ == "__main__":
    print(f"demo export dropped: {drop_demo_export()}")
