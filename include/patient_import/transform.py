"""Writes the upload-ready Cash Practice file and the rejected-rows file (SPEC §5)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from include.patient_import import problems as p
from include.patient_import.practices import Practice
from include.patient_import.rules import CODE
from include.patient_import.schema import PROBLEM_COLUMN, ROW_NUMBER, UPLOAD_COLUMNS, UPLOAD_EXTRA_COLUMNS

# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def defuse(value: object) -> str:
    """The cell as text that no spreadsheet runs as a formula."""
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def write_csv(path: Path, header: list[str], rows: Iterable[Iterable[object]]) -> Path:
    """Comma-delimited UTF-8, every field quoted, written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        writer.writerow([defuse(h) for h in header])
        writer.writerows([defuse(v) for v in row] for row in rows)
    os.replace(tmp, path)
    return path


def upload_rows(decided: pd.DataFrame, practice: Practice) -> pd.DataFrame:
    """The rows that passed validation and rules 2, 3 and 5, whatever the store holds.

    Rule 2 is applied as for a new patient: the file carries no status column, so an inactive
    row cannot make Cash Practice deactivate anyone.
    """
    keep = decided[CODE].isna()
    if not practice.uses_drip_education:
        keep &= decided["status"].ne("inactive")
    plan = practice.payment_plan_list
    if plan is not None:
        keep &= decided["account_number"].isin(plan)
    return decided[keep]


def write_upload_file(path: Path, rows: pd.DataFrame, practice: Practice,
                      client_ids: Mapping[str, int]) -> Path:
    """The Cash Practice import file. ClientID is the store's id of a patient known before this
    import; empty for a new patient."""
    columns = list(UPLOAD_COLUMNS) + [(name, UPLOAD_EXTRA_COLUMNS[name]) for name in practice.upload_extra_columns]
    values = [rows["account_number"].map(client_ids) if source is None and name == "ClientID"
              else (rows[source] if source else pd.Series(None, index=rows.index))
              for name, source in columns]
    table = pd.concat(values, axis=1).astype("object")
    table = table.where(table.notna(), None)
    return write_csv(path, [name for name, _ in columns], table.itertuples(index=False, name=None))


def write_rejected_rows(path: Path, raw: pd.DataFrame, headers: list[str], columns: list[str],
                        problems: list[p.Problem]) -> Path | None:
    """The rejected rows as read, under their original headers, with what to fix: the office can
    correct this file and drop it into the inbox again."""
    reasons: dict[int, list[str]] = {}
    for problem in problems:
        if problem.row is not None and problem.code in p.ROW_ERROR_CODES:
            reasons.setdefault(problem.row, []).append(problem.message)
    if not reasons:
        return None
    rejected = raw[raw[ROW_NUMBER].isin(reasons)]
    rows = ([*values, "; ".join(reasons[int(row)])]
            for row, *values in rejected[[ROW_NUMBER, *columns]].itertuples(index=False, name=None))
    return write_csv(path, [*headers, PROBLEM_COLUMN], rows)
