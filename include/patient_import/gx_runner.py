"""Runs the Great Expectations suites of `expectations/` and maps their results to outcomes.

Results are asked for as row numbers only (`unexpected_index_column_names` with the row number,
`exclude_unexpected_values`), so neither the results nor the Data Docs built from them hold a
patient value (SPEC §4).
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from include.patient_import import storage
from include.patient_import.schema import ROW_NUMBER
from include.patient_import.suites import load_suite

if TYPE_CHECKING:  # importing great_expectations costs seconds: only when the runner first validates
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.data_context import AbstractDataContext

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
# The scripts, styles and fonts GX's pages load from public CDNs, vendored (versions and licences in
# data_docs_assets/README.md) so that Data Docs render offline, as on a clinic's network.
_ASSETS = Path(__file__).with_name("data_docs_assets")
_VENDOR = "static/vendor"
_CDN_TO_LOCAL = (
    (r"https://[^\s\"']+/bootstrap/4\.3\.1/css/bootstrap\.min\.css", "bootstrap/bootstrap.min.css"),
    (r"https://[^\s\"']+/bootstrap/4\.3\.1/js/bootstrap\.min\.js", "bootstrap/bootstrap.min.js"),
    (r"https://[^\s\"']+/jquery-3\.[0-9.]+\.min\.js", "jquery/jquery.min.js"),
    (r"https://[^\s\"']+/popper\.js/[0-9.]+/umd/popper\.min\.js", "popper/popper.min.js"),
    (r"https://[^\s\"']+/dist/bootstrap-table\.min\.css", "bootstrap-table/bootstrap-table.min.css"),
    (r"https://[^\s\"']+/dist/bootstrap-table\.min\.js", "bootstrap-table/bootstrap-table.min.js"),
    (r"https://[^\s\"']+/bootstrap-table-filter-control(\.min)?\.css",
     "bootstrap-table/bootstrap-table-filter-control.min.css"),
    (r"https://[^\s\"']+/bootstrap-table-filter-control(\.min)?\.js",
     "bootstrap-table/bootstrap-table-filter-control.min.js"),
    (r"https://[^\s\"']+/bootstrap-datepicker(\.min)?\.css", "bootstrap-datepicker/bootstrap-datepicker.min.css"),
    (r"https://[^\s\"']+/bootstrap-datepicker(\.min)?\.js", "bootstrap-datepicker/bootstrap-datepicker.min.js"),
    (r"https://[^\s\"']+/font-awesome/[0-9.]+/css/all\.min\.css", "fontawesome/css/all.min.css"),
    (r"https://[^\s\"']+/bootstrap-prefers-dark(\.min)?\.css", "bootstrap-dark/bootstrap-prefers-dark.min.css"),
    (r"https://[^\s\"']+/npm/vega@5[^\s\"']*", "vega/vega.min.js"),
    (r"https://[^\s\"']+/npm/vega-lite@5[^\s\"']*", "vega/vega-lite.min.js"),
    (r"https://[^\s\"']+/npm/vega-embed@6[^\s\"']*", "vega/vega-embed.min.js"),
)
# GX's logo comes from its web-assets bucket with the context id and time in the query (a beacon).
_REMOTE_LOGO = re.compile(r"https://great-expectations-web-assets[^\s\"']*/(logo-long\.png)[^\s\"']*")
_REMOTE_FOOTER = re.compile(r"<footer\b[^>]*>(?:(?!</footer>).)*https?://(?:(?!</footer>).)*</footer>", re.S)
_REMOTE_CSS_URL = re.compile(r"""url\(\s*["']?(?:https?:)?//[^)]*\)""")
_GX_LINK = re.compile(r"""\shref=["']https?://(?:[a-z]+\.)?greatexpectations\.io[^"']*["']""")
_SRI = re.compile(r"\s(?:integrity|crossorigin)=(?:\"[^\"]*\"|'[^']*'|\S+)")


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

    An ephemeral (in-memory) context validates. With `docs_dir`, it keeps the results and
    `build_docs` renders them as Data Docs (through `gx_views`) in a temporary local folder, then
    into `docs_dir` (a folder of the file areas, possibly in an object store); without it, nothing
    is rendered.
    """

    docs_dir: storage.StoragePath | None = None
    _context: AbstractDataContext | None = field(default=None, init=False, repr=False)
    _batch: BatchDefinition | None = field(default=None, init=False, repr=False)
    _project: Path | None = field(default=None, init=False, repr=False)

    def _gx(self) -> AbstractDataContext:
        if self._context is None:
            _quiet_gx_logs()
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            _quiet_gx_logs()
            _no_data_fingerprint()

            # In memory: a file context rewrites and re-reads its project's YAML on every `add` and
            # every setting it looks up, which cost a small import more than its validation.
            self._context = gx.get_context(mode="ephemeral")
            if self.docs_dir is not None:
                from include.patient_import.gx_views import INDEX_VIEW, SECTION_VIEWS

                # A folder of its own for every try: pages of a failed try never mix in.
                self._project = Path(tempfile.mkdtemp(prefix="patient_import_gx_"))
                # GX's typed site config does not list `show_how_to_buttons`; SiteBuilder takes it.
                self._context.add_data_docs_site(site_name=_DOCS_SITE, site_config={  # type: ignore[typeddict-unknown-key]
                    "class_name": "SiteBuilder",
                    "show_how_to_buttons": False,  # GX tutorials' footer and buttons: not for clinics
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "view": INDEX_VIEW},
                    "site_section_builders": SECTION_VIEWS,
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                      "base_directory": str(self._project / "docs")},
                })
            # tqdm's bars go to stderr, which a task logs at ERROR: a successful validation would
            # look failed in the task log.
            self._context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
            # One asset and batch definition for every suite: each frame comes in as a batch
            # parameter. In a file context every `add` rewrites the project's YAML, so adding them
            # per suite run cost more than validating a thousand rows.
            asset = self._context.data_sources.add_pandas("export").add_dataframe_asset(_ASSET)
            self._batch = asset.add_batch_definition_whole_dataframe(_ASSET)
        return self._context

    def run(self, suite_name: str, frame: pd.DataFrame, parameters: dict | None = None) -> list[SuiteFailure]:
        context = self._gx()
        import great_expectations as gx  # after _gx(): its logs are quiet by then

        key = f"{suite_name}_{uuid.uuid4().hex[:8]}"
        batch = self._batch
        assert batch is not None  # set by _gx() with the context
        suite = context.suites.add(gx.ExpectationSuite(**_suite_document(suite_name)))
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=key, data=batch, suite=suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=key, validation_definitions=[definition], result_format=_RESULT_FORMAT, actions=[]))
        result = checkpoint.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters or {})
        failures = []
        for validation in result.run_results.values():
            for outcome in validation.results:
                config = outcome.expectation_config
                assert config is not None  # a checkpoint's results carry the expectation they ran
                if outcome.exception_info and outcome.exception_info.get("raised_exception"):
                    # An expectation that could not run is a defect, never a data verdict.
                    raise RuntimeError(f"expectation {config.type} of suite {suite_name} could not run")
                if outcome.success:
                    continue
                meta = config.meta or {}
                details = outcome.result or {}
                rows = tuple(sorted(_row_numbers(details.get("unexpected_index_list") or ())))
                failures.append(SuiteFailure(code=meta["code"], field=meta.get("field"), rows=rows,
                                             observed=details.get("observed_value")))
        return failures

    def build_docs(self) -> storage.StoragePath | None:
        """Render the results as Data Docs into `docs_dir` (replacing an earlier try's) and drop the project."""
        project = self._project  # set whenever docs_dir is
        if self.docs_dir is None or self._context is None or project is None:
            return None
        try:
            self._context.build_data_docs(site_names=[_DOCS_SITE])
            make_self_contained(project / "docs")
            storage.remove_tree(self.docs_dir)
            storage.put_folder(project / "docs", self.docs_dir)
        finally:
            shutil.rmtree(project, ignore_errors=True)
            self._context = None
        return self.docs_dir / "index.html"


def make_self_contained(docs_root: Path) -> None:
    """Make a built Data Docs site render with no network: local assets, no remote footer or logo.

    Every page's CDN scripts, styles and fonts point at the vendored copies under
    `static/vendor/` (relative to the page, so the folder can be moved or served from anywhere);
    subresource-integrity and CORS attributes go (a `crossorigin` script does not load from
    `file://`); footers linking out (GX's newsletter) are removed; GX's images that no page uses
    are dropped (they are most of the site's size).
    """
    shutil.copytree(_ASSETS, docs_root / _VENDOR, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("README.md"))
    pages = sorted(docs_root.rglob("*.html"))
    for page in pages:
        to_root = "../" * len(page.relative_to(docs_root).parent.parts)
        html = page.read_text(encoding="utf-8")
        for pattern, local in _CDN_TO_LOCAL:
            html = re.sub(pattern, f"{to_root}{_VENDOR}/{local}", html)
        # GX counts some pages' depth wrong (a validation page's favicon points one level short).
        html = re.sub(r"""(\s(?:src|href)=["'])(?:\.\./)*static/""", lambda m: f"{m.group(1)}{to_root}static/", html)
        html = _REMOTE_LOGO.sub(lambda m: f"{to_root}static/images/{m.group(1)}", html)
        html = _REMOTE_FOOTER.sub("", html)
        html = _GX_LINK.sub("", html)  # the logo's link to GX's site: a page for clinics links out nowhere
        html = _REMOTE_CSS_URL.sub("none", html)  # GX's dark-mode logo, from its bucket
        html = re.sub(r"<(script|link)\b[^>]*>", lambda m: _SRI.sub("", m.group(0)), html)
        page.write_text(html, encoding="utf-8")
    for css in (docs_root / "static" / "styles").glob("*.css"):
        css.write_text(_REMOTE_CSS_URL.sub("none", css.read_text(encoding="utf-8")), encoding="utf-8")
    used = "\n".join(p.read_text(encoding="utf-8") for p in pages)
    for image in (docs_root / "static" / "images").glob("*"):
        if image.is_file() and image.name not in used:
            image.unlink()


def _quiet_gx_logs() -> None:
    """Keep Great Expectations' INFO chatter out of task logs (call before and after importing it).

    Importing it logs ~200 "Skipping registering function …" lines from its API-docs decorator, and
    some of its modules set their own loggers to INFO (so the parent's level is not enough); its
    INFO messages describe its own bookkeeping, not our data. Its warnings and errors still show.
    """
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("great_expectations.") and isinstance(logger, logging.Logger) \
                and logging.NOTSET < logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


def _no_data_fingerprint() -> None:
    """Stop GX fingerprinting every batch: it hashes every cell of a frame under a gigabyte (an
    MD5 of pandas' hash of each value) only to show the digest in the results and Data Docs as
    `pandas_data_fingerprint`. At a million rows that cost 1.3 s and ~300 MB at validate's peak
    (issue #14), and a digest of patient values has no place on an office's page (SPEC §4).
    GX has no setting for it: its threshold, a module constant read at each batch, is set to 0."""
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.HASH_THRESHOLD = 0


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
