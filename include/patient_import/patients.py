"""The practice's stored patients as the stages read them: one query for all of them.

Validate reads the account numbers (which rows are new, for capacity), transform the store ids of
the patients known before the import (Cash Practice's ClientID), load every column the sync rules
compare (SPEC §3), under the practice's lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from include.patient_import.normalize import object_array
from include.patient_import.practices import Practice
from include.patient_import.rules import DATA_COLUMNS, decide_outcomes
from include.patient_import.schema import STORE_COLUMN
from include.patient_import.store import Patient

ACCOUNT_COLUMN = "third_party_acct_number"
# The stored columns the sync rules compare (SPEC §3) and the bookkeeping they advance.
COMPARED = ("id", "last_seen_exported_on", *(STORE_COLUMN.get(c, c) for c in DATA_COLUMNS))


def stored_patients(conn: Connection, practice_id: str, columns: Sequence[str] = (), *,
                    not_created_by: str | None = None) -> pd.DataFrame:
    """The practice's patients that carry an account number, indexed by it.

    Args:
        columns: store column names (`Patient`), in the order wanted; the account number column
            is always there (first, unless `columns` places it).
        not_created_by: leave out the patients this import inserted, so that a re-run stage sees the
            store as it was before the import.

    Returns a frame of object columns (None for a null), one row per patient, indexed by the account
    number (object dtype; empty when the practice has no patient).
    """
    table = Patient.__table__
    names = list(columns) if ACCOUNT_COLUMN in columns else [ACCOUNT_COLUMN, *columns]
    query = sa.select(*[table.c[c] for c in names]).where(
        table.c.practice_id == practice_id, table.c[ACCOUNT_COLUMN].is_not(None))
    if not_created_by is not None:
        query = query.where(sa.or_(table.c.created_import_id.is_(None), table.c.created_import_id != not_created_by))
    rows = conn.execute(query).all()
    # Column by column: pandas builds a frame from a list of row tuples ten times slower.
    by_column = zip(*rows) if rows else ((),) * len(names)
    frame = pd.DataFrame({name: object_array(values) for name, values in zip(names, by_column)})
    return frame.set_index(pd.Index(frame[ACCOUNT_COLUMN].to_numpy(dtype=object), dtype="object",
                                    name=ACCOUNT_COLUMN))


def count_patients(conn: Connection, practice_id: str, *, without_account: bool = False) -> int:
    """How many patients the practice has in the store; with `without_account`, only those without
    an account number (SPEC §3: their presence rejects every import of the practice)."""
    table = Patient.__table__
    query = sa.select(sa.func.count()).select_from(table).where(table.c.practice_id == practice_id)
    if without_account:
        query = query.where(table.c[ACCOUNT_COLUMN].is_(None))
    return int(conn.execute(query).scalar_one())


def decide_against_store(conn: Connection, practice: Practice, frame: pd.DataFrame, exported_on: date) -> pd.DataFrame:
    """`rules.decide_outcomes` for `frame` against the practice's patients as `conn` sees them:
    what the load applies (under the practice's lock) and what approval counts before it, without
    writing (SPEC §3, §8). Returns the frame with `outcome`, `code`, `changed`, `is_new`, `write`."""
    return decide_outcomes(frame, stored_patients(conn, practice.id, COMPARED), practice, exported_on)
