"""The README and docs/: every link between them leads to a page and a heading that exist, every
page is in the site's navigation, and the site builds with ``mkdocs build --strict``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_service

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _anchors(page: Path) -> set[str]:
    """The ids MkDocs gives a page's headings (the toc extension's default slugs)."""
    text = FENCE.sub("", page.read_text())
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        plain = re.sub(r"[`*_]|\[([^]]*)\]\([^)]*\)", r"\1", heading)
        slug = re.sub(r"[^\w\s-]", "", plain).strip().lower()
        anchors.add(re.sub(r"[-\s]+", "-", slug))
    return anchors


def _local_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    return [
        link for link in LINK.findall(text) if not re.match(r"[a-z]+:", link) and "`" not in link
    ]


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_every_link_leads_to_a_page_and_heading_that_exist(page: Path) -> None:
    for link in _local_links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.is_file(), f"{page.relative_to(ROOT)}: {link} leads nowhere"
        if anchor:
            assert anchor in _anchors(path), f"{page.relative_to(ROOT)}: {link}: no such heading"


def test_the_readme_stays_short_and_points_at_every_docs_section() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 180
    links = _local_links(ROOT / "README.md")
    linked = {(ROOT / link.partition("#")[0]).resolve() for link in links}
    top_level = {page for page in PAGES if page.parent == DOCS and page.name != "index.md"}
    assert top_level <= linked, sorted(p.name for p in top_level - linked)


def _nav_pages(entries: list[object]) -> set[str]:
    found: set[str] = set()
    for entry in entries:
        if isinstance(entry, str):
            found.add(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                found |= _nav_pages(value) if isinstance(value, list) else {value}
    return found


def test_every_page_is_in_the_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert _nav_pages(config["nav"]) == {str(p.relative_to(DOCS)) for p in PAGES}


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        require_service("mkdocs (pip install mkdocs-material: the test extra)")
    built = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "settings" / "index.html").is_file()


def _make_targets_named(page: Path) -> set[str]:
    """``make X`` in an inline code span, or at the start of a line in a code block."""
    text = page.read_text()
    blocks = "\n".join(FENCE.findall(text))
    return set(re.findall(r"`make ([a-z][\w-]*)", text)) | set(
        re.findall(r"^make ([a-z][\w-]*)", blocks, re.M)
    )


def test_every_make_target_the_docs_name_exists() -> None:
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    named = set().union(*(_make_targets_named(page) for page in [ROOT / "README.md", *PAGES]))
    assert {"demo", "test", "docs"} <= named
    assert named <= targets, sorted(named - targets)


def test_the_development_page_lists_every_make_target() -> None:
    described = set(re.findall(r"^## ([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    listed = set(re.findall(r"`make ([a-z][\w-]*)", (DOCS / "development.md").read_text()))
    assert described - listed == set()
