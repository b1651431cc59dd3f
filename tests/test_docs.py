"""Documentation: every file the README and docs/ point at exists (links and `docs/...md` mentions)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")  # [text](target) or [text](target#section)
MENTION = re.compile(r"`(docs/[\w./-]+\.md)`")  # `docs/page.md`, resolved from the repository root


def broken_references(page: Path) -> list[str]:
    """Relative link targets (from the page's folder) and `docs/*.md` mentions (from the root) that do not exist."""
    text = page.read_text(encoding="utf-8")
    links = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not (page.parent / t).exists()]
    mentions = [t for t in MENTION.findall(text) if not (ROOT / t).exists()]
    return links + mentions


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_referenced_file_exists(page):
    assert broken_references(page) == []


def test_the_check_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) [gone](missing.md#part) [web](https://example.org/x.md) `docs/nowhere.md`\n")
    assert broken_references(page) == ["missing.md", "docs/nowhere.md"]
