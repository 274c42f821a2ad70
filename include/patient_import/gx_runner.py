"""Runs the Great Expectations suites of `expectations/` and maps their results to outcomes.

Results are asked for as row numbers only (`unexpected_index_column_names` with the row number,
`exclude_unexpected_values`), so neither the results nor the Data Docs built from them hold a
patient value (SPEC §4).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from include.patient_import import storage
from include.patient_import.schema import ROW_NUMBER
from include.patient_import.suites import load_suite

log = logging.getLogger(__name__)

_RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [ROW_NUMBER],
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 0,
}
_DOCS_SITE = "import_docs"
_ASSET = "rows"


@dataclass(frozen=True)
class SuiteFailure:
    """One failed expectation: the problem code its meta names, and where it failed."""

    code: str
    field: str | None
    rows: tuple[int, ...] = ()
    observed: object = None


@dataclass
class SuiteRunner:
    """Validates frames against the stored suites within one GX context.

    With `docs_dir`, a file context in a temporary local folder keeps the results and `build_docs`
    renders them as Data Docs into `docs_dir` (a folder of the file areas, possibly in an object
    store); without it, an ephemeral context validates and keeps nothing.
    """

    docs_dir: storage.StoragePath | None = None
    _context: object = field(default=None, init=False, repr=False)
    _batch: object = field(default=None, init=False, repr=False)
    _project: Path | None = field(default=None, init=False, repr=False)

    def _gx(self):
        if self._context is None:
            import great_expectations as gx

            if self.docs_dir is None:
                self._context = gx.get_context(mode="ephemeral")
            else:
                # A project of its own for every try: results of a failed try never mix in.
                self._project = Path(tempfile.mkdtemp(prefix="patient_import_gx_"))
                self._context = gx.get_context(mode="file", project_root_dir=str(self._project))
                self._context.add_data_docs_site(site_name=_DOCS_SITE, site_config={
                    "class_name": "SiteBuilder",
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                      "base_directory": str(self._project / "docs")},
                })
            # One asset and batch definition for every suite: each frame comes in as a batch
            # parameter. In a file context every `add` rewrites the project's YAML, so adding them
            # per suite run cost more than validating a thousand rows.
            asset = self._context.data_sources.add_pandas("export").add_dataframe_asset(_ASSET)
            self._batch = asset.add_batch_definition_whole_dataframe(_ASSET)
        return self._context

    def run(self, suite_name: str, frame: pd.DataFrame, parameters: dict | None = None) -> list[SuiteFailure]:
        import great_expectations as gx

        context = self._gx()
        key = f"{suite_name}_{uuid.uuid4().hex[:8]}"
        batch = self._batch
        suite = context.suites.add(gx.ExpectationSuite(**_suite_document(suite_name)))
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=key, data=batch, suite=suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=key, validation_definitions=[definition], result_format=_RESULT_FORMAT, actions=[]))
        result = checkpoint.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters or {})
        failures = []
        for validation in result.run_results.values():
            for outcome in validation.results:
                if outcome.exception_info and outcome.exception_info.get("raised_exception"):
                    # An expectation that could not run is a defect, never a data verdict.
                    raise RuntimeError(f"expectation {outcome.expectation_config.type} of suite "
                                       f"{suite_name} could not run")
                if outcome.success:
                    continue
                meta = outcome.expectation_config.meta or {}
                details = outcome.result or {}
                rows = tuple(sorted(_row_numbers(details.get("unexpected_index_list") or ())))
                failures.append(SuiteFailure(code=meta["code"], field=meta.get("field"), rows=rows,
                                             observed=details.get("observed_value")))
        return failures

    def build_docs(self) -> storage.StoragePath | None:
        """Render the results as Data Docs into `docs_dir` (replacing an earlier try's) and drop the project."""
        if self.docs_dir is None or self._context is None:
            return None
        try:
            self._context.build_data_docs(site_names=[_DOCS_SITE])
            storage.remove_tree(self.docs_dir)
            storage.put_folder(self._project / "docs", self.docs_dir)
        finally:
            shutil.rmtree(self._project, ignore_errors=True)
            self._context = None
        return self.docs_dir / "index.html"


def _row_numbers(index_list) -> set[int]:
    """Row numbers of the failing rows; without values, GX groups several rows in one entry."""
    found: set[int] = set()
    for entry in index_list:
        value = entry[ROW_NUMBER]
        if isinstance(value, (list, tuple)):
            found.update(int(v) for v in value)
        else:
            found.add(int(value))
    return found


def _suite_document(name: str) -> dict:
    doc = load_suite(name)
    return {"name": doc["name"], "expectations": doc["expectations"], "meta": doc.get("meta", {})}
