"""Import Results in the Airflow UI (issue #4): a web app mounted in the API server, opened from the nav.

The app itself lives in `import_results.app`; it is built on its first request, so the schedulers,
DAG processors and task runners that also load plugins never import the web stack.
"""

from __future__ import annotations

import importlib
from urllib.parse import quote, urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/import-results"
URL_ROUTE = "import-results"
RUN_TAB_ROUTE = "imports"
DATA_DOCS_PREFIX = "/import-results-docs"
# The nav shows a top-level button's name in 10 px under its icon, 56 px wide, cut with "…":
# "Import Results" came out as "Import Re…". One short word fits.
NAV_LABEL = "Imports"

# A table with a check mark, inline: the nav icon needs no route and no network.
def _icon(stroke: str) -> str:
    return "data:image/svg+xml;utf8," + quote(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="{stroke}" '
        'stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><rect x="3" y="4" width="18" '
        'height="16" rx="2"/><path d="M3 9h18M9 9v11"/><path d="m13 15 2 2 4-4"/></svg>')


_ICON, _ICON_DARK = _icon("#6b7280"), _icon("#d1d5db")


class _LazyApp:
    """An ASGI app that imports and builds `import_results.app:app` on its first call."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._app = None

    def _load(self):
        if self._app is None:
            module, _, name = self.target.partition(":")
            self._app = getattr(importlib.import_module(module), name)
        return self._app

    async def __call__(self, scope, receive, send) -> None:
        await self._load()(scope, receive, send)

    def __repr__(self) -> str:
        return f"<lazy ASGI app {self.target}>"


def _ui_base_path() -> str:
    """The path Airflow is served under (`[api] base_url`), without its trailing slash."""
    return urlsplit(conf.get("api", "base_url", fallback="") or "/").path.rstrip("/")


class ImportResultsPlugin(AirflowPlugin):
    name = "import_results"
    fastapi_apps = [
        {"app": _LazyApp("import_results.app:app"), "url_prefix": URL_PREFIX, "name": "Import Results"},
        # Data Docs under signed links (see `import_results.app.data_docs`).
        {"app": _LazyApp("import_results.app:docs_app"), "url_prefix": DATA_DOCS_PREFIX,
         "name": "Import Results Data Docs"},
    ]
    # Opened inside the UI (an iframe under /plugin/import-results), as a button of its own in the nav.
    external_views = [
        {
            "name": NAV_LABEL,
            "href": f"{_ui_base_path()}{URL_PREFIX}/",
            "url_route": URL_ROUTE,
            "destination": "nav",
            "nav_top_level": True,
            "icon": _ICON,
            "icon_dark_mode": _ICON_DARK,
        },
        # A tab on every DAG run's page: the run's imports (the page says when the DAG is not ours).
        {
            "name": NAV_LABEL,
            "href": f"{_ui_base_path()}{URL_PREFIX}/?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "url_route": RUN_TAB_ROUTE,
            "destination": "dag_run",
            "icon": _ICON,
            "icon_dark_mode": _ICON_DARK,
        },
    ]
