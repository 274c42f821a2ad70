"""Small normalised frames for unit tests: what normalize_export hands to the rules."""

from __future__ import annotations

import pandas as pd

from include.patient_import.rules import CODE, DATA_COLUMNS
from include.patient_import.schema import ROW_NUMBER


def normalised(*rows: dict, first_row: int = 2) -> pd.DataFrame:
    """One dict per patient (missing fields are None); row numbers from `first_row`."""
    records = []
    for offset, row in enumerate(rows):
        record = {c: None for c in DATA_COLUMNS}
        record.update({"last_name": "Lopez", "first_name": "Ana", "status": "active"})
        record.update(row)
        record[ROW_NUMBER] = first_row + offset
        records.append(record)
    frame = pd.DataFrame(records, columns=[ROW_NUMBER, *DATA_COLUMNS]).astype("object")
    frame[ROW_NUMBER] = frame[ROW_NUMBER].astype("int64")
    frame[CODE] = None
    return frame
