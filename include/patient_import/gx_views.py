"""The Data Docs page views, with their Jinja templates compiled once per process.

GX's views (`DefaultJinjaPageView`, `DefaultJinjaIndexPageView`) each build a Jinja environment of
their own, and the site builder makes a view per section and page, so every template was parsed
and compiled again for every page of every import: most of the time a small import spent on its
Data Docs. These views are GX's, given one in-memory Jinja bytecode cache (Jinja's own mechanism:
a template whose source is unchanged is loaded from its compiled code). The site builder of
`gx_runner.SuiteRunner` names them in its site config (`view` of each section and of the index),
so only GX imports this module, when it renders Data Docs.
"""

from __future__ import annotations

from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
from jinja2 import BytecodeCache, Environment
from jinja2.bccache import Bucket


class _MemoryBytecodeCache(BytecodeCache):
    """Compiled templates by Jinja's cache key (template name and file); Jinja checks each one's
    source checksum before using it, so an edited template is compiled again."""

    def __init__(self) -> None:
        self._compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        compiled = self._compiled.get(bucket.key)
        if compiled is not None:
            bucket.bytecode_from_string(compiled)

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._compiled[bucket.key] = bucket.bytecode_to_string()


_COMPILED = _MemoryBytecodeCache()


class _CompiledOnce:
    """Gives a GX view's Jinja environment the shared cache of compiled templates."""

    env: Environment

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.env.bytecode_cache = _COMPILED


class PageView(_CompiledOnce, DefaultJinjaPageView):
    """GX's page view (expectation suites, validation results) with templates compiled once."""


class IndexPageView(_CompiledOnce, DefaultJinjaIndexPageView):
    """GX's index page view with templates compiled once."""


# What a SiteBuilder's config names to use them: `view` of its index builder and of each section.
INDEX_VIEW = {"module_name": __name__, "class_name": IndexPageView.__name__}
SECTION_VIEWS = {section: {"view": {"module_name": __name__, "class_name": PageView.__name__}}
                 for section in ("expectations", "validations", "profiling")}
