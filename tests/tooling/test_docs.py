"""The README and docs/ stand on their own: every relative link resolves inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_images_resolve_inside_the_repository(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists() or ROOT not in path.parents:
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_points_outside_the_clone_for_the_contract(page):
    text = page.read_text(encoding="utf-8")
    assert "shared/SPEC" not in text and "SPEC.md" not in text
    assert "the issue" not in text.lower()


def test_contract_has_the_sections_code_comments_cite():
    contract = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    cited = set()
    for folder in ("include", "dags", "plugins", "scripts"):
        for source in (ROOT / folder).rglob("*.py"):
            cited.update(re.findall(r"SPEC §(\d+)", source.read_text(encoding="utf-8")))
    assert cited
    for number in cited:
        assert re.search(rf"^## {number}\. ", contract, re.M), number
