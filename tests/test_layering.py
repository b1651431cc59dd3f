"""The layering rule, read from the source: which top-level parts may import which (imports inside functions count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Our own top-level parts, bottom to top. A part may import the ones listed for it, and nothing else of ours.
ALLOWED = {
    "errors": set(),
    "common": {"errors"},
    "embedder": {"common", "errors"},
    "index": {"common", "errors"},
    "eval": {"common", "errors", "embedder", "index"},
    "distributed": {"common", "errors", "embedder", "index"},
    "simsearch": {"common", "errors", "embedder", "index", "eval", "distributed"},
    "server": {"common", "errors", "embedder", "index", "eval", "simsearch", "distributed"},
    "cli_options": {"common", "errors", "embedder", "index", "distributed"},
    "cli_models": {"cli_options", "common", "errors", "embedder", "simsearch"},
    "cli_bench": {"cli_options", "common", "errors", "eval", "simsearch"},
    "cli": {"cli_bench", "cli_models", "cli_options", "common", "errors", "embedder", "index", "eval", "simsearch", "server", "distributed"},
}


def part_of(path: Path) -> str:
    """The top-level part a source file belongs to: its package folder, or the module itself."""
    relative = path.relative_to(ROOT)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_parts(path: Path) -> set[tuple[str, int]]:
    """(top-level name, line) of every import in the file, at any depth (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


def source_files() -> list[Path]:
    files = [ROOT / f"{name}.py" for name in ALLOWED if (ROOT / f"{name}.py").is_file()]
    return files + sorted(p for name in ALLOWED if (ROOT / name).is_dir() for p in (ROOT / name).rglob("*.py"))


def forbidden_arrows() -> list[str]:
    """Every import of one of our parts that the table does not allow, as 'file:line: part -> part'."""
    arrows = []
    for path in source_files():
        part = part_of(path)
        for name, line in sorted(imported_parts(path)):
            if name in ALLOWED and name != part and name not in ALLOWED[part]:
                arrows.append(f"{path.relative_to(ROOT)}:{line}: {part} -> {name}")
    return arrows


def test_no_stage_imports_another_sideways():
    assert forbidden_arrows() == []


def test_the_rule_catches_a_forbidden_import(tmp_path, monkeypatch):
    """The walker sees imports inside functions too, so the rule can fail."""
    fake = tmp_path / "index" / "sneaky.py"
    fake.parent.mkdir()
    fake.write_text("def load():\n    from embedder import load_model\n    return load_model()\n", encoding="utf-8")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert forbidden_arrows() == ["index/sneaky.py:2: index -> embedder"]


@pytest.mark.parametrize("part", ["index", "common"])
def test_index_and_common_never_load_a_model(part):
    """index/ and common/ take vectors or an encoder: no sentence-transformers, transformers or torch imports."""
    heavy = {"sentence_transformers", "transformers"}
    offenders = [
        f"{path.relative_to(ROOT)}:{line}" for path in sorted((ROOT / part).rglob("*.py"))
        for name, line in imported_parts(path) if name in heavy
    ]
    assert offenders == []
