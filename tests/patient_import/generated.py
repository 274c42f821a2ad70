"""Generated exports with known changes between them, for the change log and undo tests.

Import A holds `PATIENTS` generated patients; B changes known fields of some of them and adds new
patients; C (an alternative to B) changes the last name of a few of A's. The changed values are the corpus's privacy
markers (tools/corpus.py `MARKERS`): they must never reach a report or a log.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from tools import corpus
from tools.generator import generate_patients, write_export

TODAY = date(2026, 11, 1)
A_ON, B_ON, C_ON = date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 4)
B_AGAIN_ON = date(2026, 11, 5)  # "b_again": the same file as B, exported a day after C
PATIENTS = 30
NEW = 4
# B: address1 of rows 0-6 and city of rows 5-7 (two rows change both), e-mail of row 9.
B_ADDRESS_ROWS, B_CITY_ROWS, B_EMAIL_ROWS = range(0, 7), range(5, 8), range(9, 10)
B_FIELDS = {"address1": 7, "city": 3, "email": 1}
UPDATED = len(set(B_ADDRESS_ROWS) | set(B_CITY_ROWS) | set(B_EMAIL_ROWS))  # patients B updates: 9
# C (after A, without B): last name of rows 1, 2 and 20.
C_LAST_ROWS = (1, 2, 20)


def frame_a() -> pd.DataFrame:
    """Clean patients (active, so that no rule skips them), accounts from 10001."""
    patients = generate_patients(PATIENTS, seed=3, today=TODAY)
    patients["status"] = "Active"
    return patients


def frame_b() -> pd.DataFrame:
    b = frame_a()
    b.loc[list(B_ADDRESS_ROWS), "address1"] = corpus.STREET
    b.loc[list(B_CITY_ROWS), "city"] = "Quillwort Falls"
    b.loc[list(B_EMAIL_ROWS), "email"] = corpus.EMAIL
    new = generate_patients(NEW, seed=4, first_account=50001, today=TODAY)
    new["status"] = "Active"
    new["last_name"] = corpus.LAST
    return pd.concat([b, new], ignore_index=True)


def frame_c() -> pd.DataFrame:
    c = frame_a()
    c.loc[list(C_LAST_ROWS), "last_name"] = "Marzipanova-Quill"
    return c


def account(row: int) -> str:
    return str(10001 + row)


def write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_export(frame, path, excel_artefacts=False)


class Imports:
    """A home and store for A, B and C; `run(name)` imports one through the package's stages."""

    def __init__(self, tmp_path: Path, monkeypatch, url: str | None = None):
        exports = tmp_path / "exports"
        self.engine = corpus.prepare_home(tmp_path / "home", monkeypatch, limits=False, url=url)
        monkeypatch.setenv("PATIENT_IMPORT_EXPORT_ROOTS", str(exports))
        self.files = {"a": write(frame_a(), exports / "a.csv"), "b": write(frame_b(), exports / "b.csv"),
                      "c": write(frame_c(), exports / "c.csv")}
        self.files["b_again"] = self.files["b"]
        self.dates = {"a": A_ON, "b": B_ON, "c": C_ON, "b_again": B_AGAIN_ON}

    def run(self, name: str, *, dry_run: bool = False) -> corpus.Imported:
        [imported] = corpus.run_import(self.engine, self.files[name], run_id=f"manual__{name}{'_dry' * dry_run}",
                                       exported_on=self.dates[name], dry_run=dry_run)
        return imported

    def patients(self) -> dict[str, dict]:
        return corpus.patients_snapshot(self.engine)
