"""What a stage leaves in the import's staging folder for the next one: the one hand-over.

- `Job` (`job.json`): what extract decided about one export (where the stages read it, its
  checksum, export date and any rejection decided at extract).
- `Validation` (`rows.parquet`, `raw.parquet`, `problems.parquet`, `validation.json`): the
  normalised rows with their suite code, the rows as read (for the rejected-rows file), the listed
  problems and the counts of the warnings not listed.
- `upload.csv` (`staged_upload`): the Cash Practice upload file transform wrote, until the report
  stage publishes it to the outbox (only for an import that completed).

Staging lives under the `staging` area (`files.staging_dir`) and is cleared by the report stage.
Every file is written whole before the next stage may read it (`validation.json` last).
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from include.patient_import import files, storage
from include.patient_import import problems as p
from include.patient_import.problem_table import ProblemTable
from include.patient_import.schema import ROW_NUMBER

# Rows per block of `validated_row_blocks`. A block's working set (its rows as Python values, the
# stored patients it names, the decision) is what the load's and transform's peaks are made of: at
# 1,000,000 rows on PostgreSQL the load stage alone peaked at about 880 MB over 10 blocks of
# 100,000 and 695 MB over 20 of 50,000, in the same seconds (the per-block reads of the store
# return the same rows either way; docs/performance.md).
ROW_BLOCK = 50_000


@dataclass
class Job:
    """What extract decided about one export; the later stages read it from staging."""

    import_id: str
    practice_id: str
    source: str  # the file the stages read: the archived original, or the given file on a dry run
    export_name: str
    sha256: str
    size: int
    exported_on: str
    dry_run: bool
    archive_path: str | None = None
    rejection: dict | None = None  # {"code", "message"} of a rejection decided at extract
    exported_on_source: str | None = None  # files.FROM_CONF, FROM_FILE_NAME or FROM_LANDING (SPEC §6)

    def save(self) -> None:
        storage.write_text(files.staging_dir(self.import_id) / "job.json", json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, import_id: str) -> Job:
        """The job extract saved; FileNotFoundError when the import was never extracted here."""
        path = files.staging_dir(import_id) / "job.json"
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    @property
    def export_date(self) -> date:
        return date.fromisoformat(self.exported_on)

    def rejected(self) -> p.ExportRejected | None:
        return p.ExportRejected(**self.rejection) if self.rejection else None


@dataclass
class Validation:
    """What the validate stage found; `frame` is None when the file could not be read."""

    frame: pd.DataFrame | None = None  # normalised rows with their suite `code`
    # The rows as read: what validate read, as a frame or already as `raw.parquet`'s bytes
    # (`parquet_bytes`: what validate keeps); not read back by `load_validation` (`load_raw_rows`).
    raw: pd.DataFrame | bytes | None = None
    headers: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    problems: ProblemTable = field(default_factory=ProblemTable)
    rejection: p.ExportRejected | None = None
    docs_index: storage.StoragePath | None = None
    # The normalised rows with their suite `code` as Arrow columns (`validated_table`), what
    # validate keeps instead of `frame`: a million rows take ~190 MB so, ~350 MB as Python values.
    rows: pa.Table | None = None

    @property
    def read(self) -> int:
        if self.rows is not None:
            return self.rows.num_rows
        return 0 if self.frame is None else len(self.frame)

    def rows_frame(self) -> pd.DataFrame | None:
        """The validated rows as `frame` holds them (object columns of Python values, None for an
        empty cell), made from `rows` when validate kept those; None when there are none."""
        return _validated_rows(self.rows) if self.rows is not None else self.frame


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """The bytes `save_validation` writes for `frame`: the rows as read kept this way take a
    fraction of their frame's memory (1,000,000 rows: about 55 MB against 350 MB)."""
    out = io.BytesIO()
    _write_frame(frame, out)
    return out.getvalue()


def _write_frame(frame: pd.DataFrame, handle) -> None:
    frame.to_parquet(handle, index=False)


def validated_table(frame: pd.DataFrame, arrow: Mapping[str, pa.Array], columns: Sequence[str]) -> pa.Table:
    """The table `DataFrame.to_parquet` writes for the validated rows, made a column at a time:
    `columns` in order, each from `arrow` (converted already, `NormalizedExport.arrow`) or from
    `frame`, whose columns are consumed (dropped once converted): for its owner, which needs them
    no more. The same types and pandas metadata as `to_parquet` of the whole frame, so
    rows.parquet's bytes are the same; the object columns and their Arrow copies are never all
    held at once (a million rows: ~350 MB and ~190 MB; issue #14).

    Raises KeyError for a column in neither."""
    dtypes = {name: (frame[name].dtype if name in frame.columns else np.dtype(object)) for name in columns}
    arrays = []
    for name in columns:
        if name in arrow:
            arrays.append(arrow[name])
        else:
            # As pyarrow's `Table.from_pandas` converts a column.
            arrays.append(pa.array(frame[name], from_pandas=True))
            del frame[name]
    schema = pa.schema([pa.field(name, array.type) for name, array in zip(columns, arrays)])
    # The pandas metadata `to_parquet` writes depends on the column names, dtypes and Arrow types
    # only: made from no rows of the same.
    empty = pd.DataFrame({name: pd.Series([], dtype=dtypes[name]) for name in columns})
    metadata = pa.Table.from_pandas(empty, schema=schema, preserve_index=False).schema.metadata
    return pa.Table.from_arrays(arrays, schema=schema.with_metadata(metadata))


def save_validation(import_id: str, validation: Validation) -> None:
    """Write the validation to staging, `validation.json` last (its presence says the rest is complete).
    The validated rows are `rows` when validate kept them as Arrow, else `frame`."""
    stage = files.staging_dir(import_id)
    rows = validation.rows if validation.rows is not None else validation.frame
    for name, frame in (("rows.parquet", rows), ("raw.parquet", validation.raw)):
        if frame is not None:
            with storage.writing(stage / name) as handle:
                if isinstance(frame, bytes):
                    handle.write(frame)
                elif isinstance(frame, pa.Table):
                    pq.write_table(frame, handle, compression="snappy")  # as `to_parquet` writes
                else:
                    _write_frame(frame, handle)
    with storage.writing(stage / "problems.parquet") as handle:
        validation.problems.listed.to_parquet(handle, index=False)
    rejection = validation.rejection
    doc = {
        "headers": validation.headers, "columns": validation.columns,
        # Only counts: the warnings beyond the cap of their code and field (problem_table).
        "problems_omitted": validation.problems.omitted_columns(),
        "rejection": None if rejection is None else {
            "code": rejection.code, "message": rejection.message, "row": rejection.row,
            "field": rejection.field, "details": rejection.details},
        "docs_index": str(validation.docs_index) if validation.docs_index else None,
    }
    # Written last: its presence says the Parquet files beside it are complete.
    storage.write_text(stage / "validation.json", json.dumps(doc))


def _validated_rows(table: pa.Table, texts: Collection[str] = ()) -> pd.DataFrame:
    """Staged validated rows (`rows.parquet`, or a batch of it) as `Validation.frame` holds them:
    object columns of Python values, None for every empty cell, the row numbers as int64; the
    text columns named in `texts` as Arrow text instead (`_objects`)."""
    frame = _objects(table, texts)
    if ROW_NUMBER in frame.columns:
        frame[ROW_NUMBER] = frame[ROW_NUMBER].astype("int64")
    return frame


# What `_parquet_reader` reads of a column chunk at a time (pyarrow's `buffer_size`).
_READ_BUFFER = 1 << 20


def validated_row_blocks(import_id: str, columns: list[str] | None = None, *,
                         rows: int | None = None, texts: Collection[str] = ()) -> Iterator[pd.DataFrame]:
    """The validated rows (`Validation.frame`) `rows` (default `ROW_BLOCK`) at a time, in file
    order, each block as `load_validation` gives the whole (index from 0 in every block); only
    `columns` when given. Nothing when validate kept no rows (the file could not be read).

    `texts`: text columns a stage only writes out, kept as Arrow text (`pd.ArrowDtype`, <NA> for
    an empty cell) rather than made Python strings (transform's upload file: 100,000 rows' 20
    columns as Python strings, then back to Arrow for the writer, took about 0.3 s; issue #14).

    For a stage that needs one row at a time: the whole of a million rows as Python values takes
    about a gigabyte; a block of them a tenth of that."""
    path = files.staging_dir(import_id) / "rows.parquet"
    if not path.exists():
        return
    with _parquet_reader(path) as reader:
        for batch in reader.iter_batches(batch_size=rows or ROW_BLOCK, columns=columns):
            yield _validated_rows(pa.Table.from_batches([batch]), texts)


@contextlib.contextmanager
def _parquet_reader(path: storage.StoragePath) -> Iterator[pq.ParquetFile]:
    """A staged Parquet file opened to be read a block at a time, in memory bounded by the block.

    On an object store it is downloaded once first: the reads hop between column chunks
    `_READ_BUFFER` at a time, and fsspec's read-ahead (s3fs: 50 MiB past each miss) would fetch
    most of the file again at every hop (1,966 MB fetched for a 171 MB file). Not pyarrow's default
    pre-buffering: it keeps every range it has read for the reader's life, so a stage reading a
    block at a time held the whole file's column chunks by its end (about 300 MB at a million rows,
    450 MB at two, more than the blocks themselves; issue #14's "flat beyond" a million rows);
    reads of `_READ_BUFFER` a column chunk instead, as fast on a local disk."""
    with storage.local_file(path) as local, local.open("rb") as handle:
        yield pq.ParquetFile(handle, pre_buffer=False, buffer_size=_READ_BUFFER)


def has_validated_rows(import_id: str) -> bool:
    """Whether validate kept rows (`Validation.frame` is not None): False when the file could not be read."""
    return (files.staging_dir(import_id) / "rows.parquet").exists()


def _objects(table: pa.Table, texts: Collection[str] = ()) -> pd.DataFrame:
    """An Arrow table as object columns holding Python values and None for every empty cell; a
    text (or all-null) column named in `texts` as Arrow large_string (`pd.ArrowDtype`) instead."""
    columns: dict[str, object] = {}
    for name, column in zip(table.column_names, table.columns):
        is_text = pa.types.is_large_string(column.type) or pa.types.is_string(column.type)
        if name in texts and (is_text or pa.types.is_null(column.type)):
            columns[name] = pd.Series(pd.arrays.ArrowExtensionArray(column.cast(pa.large_string())), copy=False)
        elif is_text or pa.types.is_null(column.type):
            columns[name] = column.to_numpy(zero_copy_only=False)  # object array, None where null
        else:
            values = column.to_pandas().astype("object")
            columns[name] = values.where(values.notna(), None).to_numpy()
    if not any(isinstance(values, pd.Series) for values in columns.values()):
        return pd.DataFrame(columns, dtype="object")
    return pd.DataFrame({name: values if isinstance(values, pd.Series) else pd.Series(values, dtype="object")
                         for name, values in columns.items()})


def _read_frame(path) -> pd.DataFrame:
    with path.open("rb") as handle:
        return pd.read_parquet(handle)


def load_raw_rows(import_id: str, rows: Iterable[int]) -> pd.DataFrame | None:
    """The rows as read (`Validation.raw`) whose spreadsheet row number is in `rows`, in file
    order; None when validate kept none (the file could not be read).

    Only those rows are kept: the file is decoded a block at a time and each block cut to them at
    once (none when none is asked for); the rejected-rows file needs a few of a file's rows, and the
    whole file as read is the largest thing staging holds (a million rows take gigabytes as a frame)."""
    path = files.staging_dir(import_id) / "raw.parquet"
    if not path.exists():
        return None
    wanted = sorted({int(row) for row in rows})
    # The rows kept are written as they are found to a temporary file, not to memory: read back
    # by pandas, the file's bytes are never held beside the frame made of them (nor copied).
    with tempfile.TemporaryFile() as out:
        if not wanted:  # the file's columns alone, from its footer: not even downloaded
            with path.open("rb") as handle:
                pq.ParquetWriter(out, pq.read_schema(handle)).close()
        else:
            with _parquet_reader(path) as reader, pq.ParquetWriter(out, reader.schema_arrow) as writer:
                values = pa.array(wanted, reader.schema_arrow.field(ROW_NUMBER).type)
                # A block at a time, each cut to the rows wanted at once: a Parquet filter decodes
                # every row group whole before it filters (the rows as read of a million rows:
                # 358 MB of the transform stage's peak, which reads only a few of them; issue #14).
                for batch in reader.iter_batches(batch_size=ROW_BLOCK):
                    kept = batch.filter(pc.is_in(batch.column(ROW_NUMBER), value_set=values))
                    if kept.num_rows:
                        writer.write_batch(kept)
        out.seek(0)
        # A frame as pandas reads the Parquet file (by its metadata: dtypes, index), of those rows alone.
        return pd.read_parquet(out)


def load_validation(import_id: str, *, rows: bool = True) -> Validation:
    """The validation `save_validation` wrote, without the rows as read (`load_raw_rows` reads
    those that are needed), and without the validated rows when not `rows` (`frame` None; a stage
    reading them a block at a time: `validated_row_blocks`). FileNotFoundError before validate ran."""
    stage = files.staging_dir(import_id)
    doc = json.loads((stage / "validation.json").read_text(encoding="utf-8"))
    frame = None
    if rows and (stage / "rows.parquet").exists():
        with (stage / "rows.parquet").open("rb") as handle:
            frame = _validated_rows(pq.read_table(handle))
    rejection = doc["rejection"]
    if (stage / "problems.parquet").exists():
        listed = _read_frame(stage / "problems.parquet")
    else:  # staged before problems were columns: {"code": [...], "row": [...], ...} in the JSON
        listed = pd.DataFrame(doc.get("problems") or {})
    return Validation(
        frame=frame, headers=doc["headers"], columns=doc["columns"],
        problems=ProblemTable.from_omitted_columns(listed, doc.get("problems_omitted")),
        rejection=p.ExportRejected(**rejection) if rejection else None,
        docs_index=storage.path_of(doc["docs_index"]) if doc["docs_index"] else None)


def staged_upload(import_id: str) -> storage.StoragePath:
    """Where transform writes the Cash Practice upload file: in staging, not the outbox, until the
    report stage knows the import completed and publishes it (`files.upload_file`); a file of an
    import that waits for approval, is rejected or fails is never where the office uploads from."""
    return files.staging_dir(import_id) / "upload.csv"


def staged_read(import_id: str) -> int:
    """How many rows validation read (0 before it ran): what a failed import reports as rejected."""
    rows = files.staging_dir(import_id) / "rows.parquet"
    if not rows.exists():
        return 0
    with rows.open("rb") as handle:
        return pq.ParquetFile(handle).metadata.num_rows
