"""Writes the upload-ready Cash Practice file (to staging, until the import completes) and the
rejected-rows file (SPEC §5).

Both are UTF-8 with a byte-order mark: without it Excel on Windows opens a CSV as Windows-1252 and
shows `MÃ¼ller`, which the office would then save back garbled.
"""

from __future__ import annotations

import codecs
import io
import logging
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from sqlalchemy.engine import Engine

from include.patient_import import files, records, settings, storage
from include.patient_import import problems as p
from include.patient_import.encoding import repair
from include.patient_import.patients import ACCOUNT_COLUMN, count_patients, stored_client_ids, stored_patients
from include.patient_import.practices import Practice, load_practices
from include.patient_import.rules import CODE, passes_practice_rules
from include.patient_import.schema import (
    FIELDS_BY_NAME,
    ORIGINAL_ROW_COLUMN,
    PROBLEM_COLUMN,
    ROW_NUMBER,
    UPLOAD_COLUMNS,
    UPLOAD_EXTRA_COLUMNS,
)
from include.patient_import.staging import (
    Job,
    has_validated_rows,
    load_raw_rows,
    load_validation,
    staged_read,
    staged_upload,
    validated_row_blocks,
)
from include.patient_import.storage import StoragePath
from include.patient_import.untrusted import FORMULA_STARTS, defuse, quoted_csv_writer

log = logging.getLogger(__name__)

_FORMULA_STARTS_ARROW = pa.array(FORMULA_STARTS, type=pa.large_string())
_BLOCK_ROWS = 50_000
_UPLOAD_CSV = pa_csv.WriteOptions(include_header=False, quoting_style="all_valid", eol="\r\n")
_QUOTE, _NOTHING = pa.scalar("'", pa.large_string()), pa.scalar("", pa.large_string())


def defuse_column(values: pd.Series) -> list[str]:
    """Every cell of a column as :func:`defuse` gives it; text columns in one vectorised pass."""
    return _defused_array(values).to_pylist()


def _defused_array(values: pd.Series) -> pa.Array | pa.ChunkedArray:
    """`defuse_column` as an Arrow text array (large_string, no nulls, one per cell). A column of
    Arrow text (`staging.validated_row_blocks(texts=...)`) is defused as it is, with no Python
    string made of it; a test holds it to the same cells as its values as Python objects."""
    if isinstance(values.dtype, pd.ArrowDtype) and pa.types.is_large_string(values.dtype.pyarrow_dtype):
        texts = pc.fill_null(values.array.__arrow_array__(), "")
    else:
        objects = values.to_numpy(dtype=object)
        if not set(map(type, objects)) <= {str, type(None)}:
            return pa.array([defuse(v) for v in objects], type=pa.large_string())
        texts = pc.fill_null(pa.array(objects, type=pa.large_string()), "")
    risky = pc.is_in(pc.utf8_slice_codeunits(texts, 0, 1), value_set=_FORMULA_STARTS_ARROW)
    quoted = pc.binary_join_element_wise(_QUOTE, texts, _NOTHING)
    return pc.if_else(risky, quoted, texts)


def _write_defused(path: StoragePath, header: list[str], rows: Iterable[Iterable[str]]) -> StoragePath:
    with storage.writing(path, "w", encoding="utf-8-sig", newline="") as handle:
        writer = quoted_csv_writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_csv(path: StoragePath, header: list[str], rows: Iterable[Iterable[object]]) -> StoragePath:
    """Comma-delimited UTF-8 with a byte-order mark, every field quoted, written whole or not at all."""
    return _write_defused(path, [defuse(h) for h in header], ([defuse(v) for v in row] for row in rows))


def upload_rows(decided: pd.DataFrame, practice: Practice) -> pd.DataFrame:
    """The rows that passed validation and rules 2, 3 and 5, whatever the store holds.

    Rule 2 is applied as for a new patient: the file carries no status column, so an inactive
    row cannot make Cash Practice deactivate anyone.
    """
    return decided[passes_practice_rules(decided, practice)]


def write_upload_file(path: StoragePath, rows: pd.DataFrame | Iterable[pd.DataFrame], practice: Practice,
                      client_ids: Mapping[str, int] | Callable[[pd.DataFrame], Mapping[str, int]]) -> StoragePath:
    """The Cash Practice import file. ClientID is the store's id of a patient known before this
    import; empty for a new patient. `rows`: the upload rows (`upload_rows`), whole or as blocks in
    file order (a stage reading them a block at a time never holds them all); `client_ids`: the ids
    by account number, or a function giving them for one block's rows (the stage's
    `_client_ids_reader`)."""
    columns = _upload_column_sources(practice)
    ids_of = _ids_by_block(client_ids)
    blocks = [rows] if isinstance(rows, pd.DataFrame) else rows
    header = [defuse(name) for name, _ in columns]
    with storage.writing(path, "wb") as handle:
        # The header through the csv module, the cells through Arrow's writer a block at a time
        # (the cells of a million rows as Python strings would take gigabytes): the same bytes as
        # `write_csv` (every field quoted, quotes doubled, CRLF), which a test holds them to.
        handle.write(codecs.BOM_UTF8 + _csv_line(header).encode("utf-8"))
        for block in blocks:
            block_ids = ids_of(block)
            for start in range(0, len(block), _BLOCK_ROWS):
                part = block.iloc[start:start + _BLOCK_ROWS]
                cells = [_defused_array(values) for values in _upload_columns(part, columns, block_ids)]
                pa_csv.write_csv(pa.table(cells, names=[str(n) for n in range(len(cells))]), handle, _UPLOAD_CSV)
    return path


def _upload_column_sources(practice: Practice) -> list[tuple[str, str | None]]:
    """The upload file's (header, source column) pairs for `practice`, in order (None: no source)."""
    return list(UPLOAD_COLUMNS) + [(name, UPLOAD_EXTRA_COLUMNS[name]) for name in practice.upload_extra_columns]


# The validated columns `upload_rows` decides on (`rules.passes_practice_rules`), kept as Python values.
_RULE_COLUMNS = [CODE, "status", "account_number"]


def _ids_by_block(client_ids: Mapping[str, int] | Callable[[pd.DataFrame], Mapping[str, int]]
                  ) -> Callable[[pd.DataFrame], pd.Series]:
    """`write_upload_file`'s ids of one block's rows (`_id_texts`): from the function, or the
    whole mapping's, built once rather than once per block."""
    if callable(client_ids):
        return lambda block: _id_texts(client_ids(block))
    whole = _id_texts(client_ids)
    return lambda block: whole


def _id_texts(client_ids: Mapping[str, int]) -> pd.Series:
    """The ids as text indexed by account number, so that a file mixing known and new patients
    never says "12.0"; a Series (`Series.map` of a dict builds one from it on every call)."""
    return pd.Series([str(client_id) for client_id in client_ids.values()],
                     index=pd.Index(list(client_ids), dtype="object"), dtype="object")


def _upload_columns(rows: pd.DataFrame, columns: list[tuple[str, str | None]],
                    ids: pd.Series) -> list[pd.Series]:
    """The upload file's columns of `rows`, in order: ClientID from `ids`, the rest from their source."""
    known = rows["account_number"].map(ids).astype("object")
    # An unfilled column holds None, not NaN (a NaN-filled object column would take defusing's
    # cell-by-cell path).
    unfilled = pd.Series(np.full(len(rows), None, dtype=object), index=rows.index, dtype="object")
    return [known.where(known.notna(), None) if source is None and name == "ClientID"
            else (rows[source] if source else unfilled)
            for name, source in columns]


def _csv_line(cells: list[str]) -> str:
    line = io.StringIO()
    quoted_csv_writer(line).writerow(cells)
    return line.getvalue()


def write_rejected_rows(path: StoragePath, raw: pd.DataFrame, headers: list[str], columns: list[str],
                        problems: Iterable[p.Problem]) -> StoragePath | None:
    """The rejected rows as read (double-decoded names repaired), under their original headers, with
    what to fix and the row each had in the export: the office can correct this file and drop it into the inbox
    again (both added columns are ignored when it comes back)."""
    reasons: dict[int, list[str]] = {}
    for problem in problems:
        if problem.row is not None and problem.code in p.ROW_ERROR_CODES:
            reasons.setdefault(problem.row, []).append(problem.message)
    if not reasons:
        return None
    rejected = raw[raw[ROW_NUMBER].isin(reasons)].copy()
    for name in columns:
        if name in FIELDS_BY_NAME and FIELDS_BY_NAME[name].kind == "name":
            # Double-decoded names go back to the office repaired, as they would have been stored.
            rejected[name] = [repair(v)[0] if isinstance(v, str) else v for v in rejected[name]]
    rows = ([*values, "; ".join(reasons[int(row)]), int(row)]
            for row, *values in rejected[[ROW_NUMBER, *columns]].itertuples(index=False, name=None))
    return write_csv(path, [*headers, PROBLEM_COLUMN, ORIGINAL_ROW_COLUMN], rows)


# ---------------------------------------------------------------- the stage

def transform_import(engine: Engine, import_id: str) -> dict:
    """The transform stage: write the rejected-rows file to the practice's outbox and record its
    path, and the upload-ready Cash Practice file to staging (SPEC §5); nothing on a dry run. The
    upload file reaches the outbox only when the import completes (the report stage publishes it):
    while it waits for approval, and when it is rejected or fails, there is nothing to upload.

    Returns {"import_id", "upload": staged path or None, "rejected_rows": path or None}.
    """
    job = Job.load(import_id)
    validation = load_validation(import_id, rows=False)
    if job.dry_run or not has_validated_rows(import_id) or job.practice_id not in (practices := load_practices()):
        return {"import_id": import_id, "upload": None, "rejected_rows": None}
    practice = practices[job.practice_id]
    outbox = settings.area("outbox", files.practice_folder(job.practice_id))
    row_errors = validation.problems.with_codes(p.ROW_ERROR_CODES)
    rejected_rows = None
    if len(row_errors):
        # Only the rejected rows as read come back from staging, not the whole file.
        raw = load_raw_rows(import_id, row_errors.listed["row"].dropna())
        rejected_rows = write_rejected_rows(outbox / f"{import_id}_rejected_rows.csv", raw,
                                            validation.headers, validation.columns, row_errors)
    upload, written = None, 0
    if validation.rejection is None:
        sources = list(dict.fromkeys(source for _, source in _upload_column_sources(practice) if source))
        # The rows a block at a time (staging.validated_row_blocks): no rule here needs the whole
        # file, and a million rows as Python values would take about a gigabyte.
        def upload_blocks():
            nonlocal written
            # Only the columns the rules and the file need; those only written out stay Arrow text.
            for block in validated_row_blocks(import_id, columns=list(dict.fromkeys(_RULE_COLUMNS + sources)),
                                              texts=set(sources) - set(_RULE_COLUMNS)):
                kept = upload_rows(block, practice)
                written += len(kept)
                yield kept

        upload = write_upload_file(staged_upload(import_id), upload_blocks(), practice,
                                   _client_ids_reader(engine, job, staged_read(import_id)))
    records.update_import(engine, import_id, rejected_rows_path=str(rejected_rows) if rejected_rows else None)
    log.info("import %s: upload file %s; rejected-rows file %s", import_id,
             f"with {written} rows" if upload else "not written (the file was rejected)",
             "written" if rejected_rows else "not needed")
    return {"import_id": import_id, "upload": str(upload) if upload else None,
            "rejected_rows": str(rejected_rows) if rejected_rows else None}


# The practice's ClientIDs are read whole, once for the stage, when it holds at most this many
# times the file's rows: one read of every id costs less than a probe of the key per account
# number (100,000 of 97,600 stored on SQLite: 0.10-0.14 s against 0.28-0.36 s; at 1,000,000 on
# PostgreSQL ~0.8 s against 20 probes of 0.33 s; issue #14). Beyond it (a small file of a large
# practice) each block's patients are probed.
_WHOLE_READ_RATIO = 2


def _client_ids_reader(engine: Engine, job: Job, rows: int) -> Callable[[pd.DataFrame], Mapping[str, int]]:
    """`write_upload_file`'s ClientIDs of one block (by account number) for an export of `rows`
    rows: from one read of the practice's ids (`stored_client_ids`, Arrow: ~20 MB a million
    patients) when it holds at most `_WHOLE_READ_RATIO` times `rows` patients, else from a probe
    of each block's own (`_known_client_ids`). Either way the patients known before this import
    (not created by it), as the store holds them when the read runs."""
    with engine.connect() as conn:
        if count_patients(conn, job.practice_id) > _WHOLE_READ_RATIO * rows:
            return lambda block: _known_client_ids(engine, job, block["account_number"])
        known = stored_client_ids(conn, job.practice_id, not_created_by=job.import_id)
    return lambda block: _client_ids_in(known, block["account_number"])


def _client_ids_in(known: pa.Table, accounts: pd.Series) -> dict[str, int]:
    """The ids of `known` (`stored_client_ids`) whose account number is one of `accounts` (texts;
    anything else, None included, matches nobody). The block's accounts are the small set the
    practice's are looked up in (a hash of 50,000, not of a million, built per block)."""
    wanted = pa.array([a if isinstance(a, str) else None for a in accounts.tolist()], type=pa.string())
    kept = pc.is_in(known[ACCOUNT_COLUMN], value_set=wanted, skip_nulls=True)
    return dict(zip(pc.filter(known[ACCOUNT_COLUMN], kept).to_pylist(), pc.filter(known["id"], kept).to_pylist()))


def _known_client_ids(engine: Engine, job: Job, accounts: pd.Series) -> dict[str, int]:
    """Store ids of the patients of `accounts` known before this import: their ClientID in Cash
    Practice. One block's, in a read of its own through the practice's key
    (`stored_patients(accounts=...)`; no transaction left open while the file is written)."""
    with engine.connect() as conn:
        ids = stored_patients(conn, job.practice_id, ["id"], not_created_by=job.import_id,
                              accounts=accounts.tolist())["id"]
    # Whole columns to Python values at once, not a str() and int() per patient.
    return dict(zip(ids.index.astype("object").tolist(), ids.astype("int64").tolist()))
