"""Load sentence-pair similarity sets (STS-B en/zh, SICK, generic s1/s2/score files).

The layout is recognised from the header: STS-B's `sentence1/sentence2/score`
(with a `split` column), SICK's `sentence_A/sentence_B/relatedness_score`
(with `SemEval_set` in the full release), a generic `s1,s2,score` header, or
no header at all with three columns sentence1, sentence2, score (Chinese STS-B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.corpus import csv_rows, decoded_lines, json_object
from errors import DataError, UsageError

# (sentence1, sentence2, score, split) column names per known header layout.
_LAYOUTS = (
    ("sentence1", "sentence2", "score", "split"),
    ("sentence_A", "sentence_B", "relatedness_score", "SemEval_set"),
    ("s1", "s2", "score", "split"),
)
# SICK names its splits differently from STS-B.
_SPLIT_ALIASES = {"dev": {"dev", "trial", "valid", "validation"}, "test": {"test"}, "train": {"train"}}


@dataclass(frozen=True)
class StsData:
    """Sentence pairs with gold similarity scores."""

    name: str
    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray
    split: str | None = None  # the split kept, when the file has a split column
    lines: list[int] = field(default_factory=list)  # 1-based file line of each pair, for error messages
    path: Path | None = None  # the file the pairs came from

    def __len__(self) -> int:
        return len(self.scores)

    def distinct(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Each distinct sentence once (so it is encoded once), and the rows of every pair's first and second sentence."""
        unique = list(dict.fromkeys(self.sentences1 + self.sentences2))
        row = {s: i for i, s in enumerate(unique)}
        return unique, np.array([row[s] for s in self.sentences1]), np.array([row[s] for s in self.sentences2])


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank rows as (line number, fields): TSV split literally, CSV with quoting, JSONL as header + values."""
    lines = list(decoded_lines(path))
    if not lines:
        raise DataError(f"{path}: empty file")
    if path.suffix in (".jsonl", ".ndjson"):
        return _json_rows(path, lines)
    if "\t" in lines[0][1]:
        return [(n, line.split("\t")) for n, line in lines if line.strip()]
    return [(n, row) for n, row in csv_rows(path, iter(lines)) if any(cell.strip() for cell in row)]


def _json_rows(path: Path, lines: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """JSON objects as table rows under a header of the first object's keys."""
    records = []
    for lineno, line in lines:
        if not line.strip():
            continue
        records.append((lineno, json_object(line, f"{path}:{lineno}")))
    header = list(records[0][1]) if records else []
    return [(0, header)] + [(n, [str(r.get(key, "")) for key in header]) for n, r in records]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _columns(path: Path, header: list[str], columns: tuple[str, str, str] | None) -> tuple[int, int, int, int | None] | None:
    """Column positions of s1, s2, score and split, or None if the file has no header."""
    names = [h.strip() for h in header]
    layouts = [(*columns, "split")] if columns else _LAYOUTS
    for s1, s2, score, split in layouts:
        if {s1, s2, score} <= set(names):
            return names.index(s1), names.index(s2), names.index(score), names.index(split) if split in names else None
    if columns:
        raise UsageError(f"{path}:1: header has no columns {', '.join(columns)} (found: {', '.join(n if n.isprintable() else repr(n) for n in names)})")
    if len(names) >= 3 and _is_number(names[2]):
        return None
    raise DataError(f"{path}:1: unrecognised header (expected sentence1/sentence2/score, sentence_A/sentence_B/relatedness_score or s1/s2/score)")


def parse_data_arg(value: str, default_split: str | None) -> tuple[Path, str | None]:
    """`PATH` or `PATH:split` (as given to `eval sts --data`) → (path, split)."""
    head, sep, tail = value.rpartition(":")
    if sep and head and tail and "/" not in tail and not Path(value).exists():
        return Path(head), tail
    return Path(value), default_split


def load_sts(path: Path | str, split: str | None = "test", columns: tuple[str, str, str] | None = None) -> StsData:
    """Read the pairs of `path`; `split` filters files that carry a split column and is ignored otherwise."""
    path = Path(path)
    rows = _rows(path)
    if not rows or not rows[0][1]:
        raise DataError(f"{path}: no pairs (only blank lines)")
    positions = _columns(path, rows[0][1], columns)
    if positions is None:
        positions, body = (0, 1, 2, None), rows
    else:
        body = rows[1:]
    i1, i2, iscore, isplit = positions
    wanted = _SPLIT_ALIASES.get(split.lower(), {split.lower()}) if split and isplit is not None else None
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    lines: list[int] = []
    for lineno, row in body:
        where = f"{path}:{lineno}"
        if len(row) <= max(i1, i2, iscore, isplit or 0):
            raise DataError(f"{where}: expected at least {max(i1, i2, iscore, isplit or 0) + 1} fields, found {len(row)}")
        if wanted is not None and row[isplit].strip().lower() not in wanted:
            continue
        value = row[iscore].strip().strip('"')
        if not _is_number(value):
            raise DataError(f"{where}: score {value!r} is not a number")
        if not math.isfinite(float(value)):
            raise DataError(f"{where}: score {value!r} is not a finite number")
        s1.append(row[i1].strip())
        s2.append(row[i2].strip())
        scores.append(float(value))
        lines.append(lineno)
    if not scores:
        raise DataError(f"{path}: no pairs" + (f" in split {split!r}" if wanted is not None else ""))
    kept = split if wanted is not None else None
    return StsData(f"{path.name}:{split}" if kept else path.name, s1, s2, np.asarray(scores, dtype=np.float64), kept, lines, path)
