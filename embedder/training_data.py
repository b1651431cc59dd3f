"""Read and validate training data for each method, before any model is loaded.

Every adapter returns `TrainingData`: named text columns (plus a `score` column for
CoSENT) in the layout sentence-transformers' losses expect, and counts for the
record. A bad row raises `DataError` naming the file and line.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common.corpus import CorpusSpec, csv_rows, decoded_lines, json_object
from common.sts_data import StsData, load_sts, parse_data_arg
from embedder.training_methods import METHODS, SCORED_METHODS
from errors import DataError, UsageError

# NLI files: (premise, hypothesis, label) column names, SICK first.
_NLI_LAYOUTS = (
    ("sentence_A", "sentence_B", "entailment_judgment"),
    ("premise", "hypothesis", "label"),
    ("sentence1", "sentence2", "gold_label"),
)
_TRIPLET_HEADER = ("anchor", "positive", "negative")


@dataclass(frozen=True)
class TrainSet:
    """One --train set: the file, the split read from files with a split column, and the method that trains on it."""

    path: Path
    method: str
    split: str = "train"

    @property
    def spec(self) -> str:
        """The set written back as FILE:SPLIT@METHOD, for messages and the record."""
        return f"{self.path}:{self.split}@{self.method}"


def parse_train_spec(spec: str | Path, default_method: str) -> TrainSet:
    """`FILE[:SPLIT][@METHOD]` (as given to --train) → a checked TrainSet; the split defaults to train, the method to `default_method`.

    A test split is refused: it is kept for reporting, and nothing chosen on it can be reported.
    """
    text = str(spec)
    head, sep, tail = text.rpartition("@")
    if sep and head and not Path(text).exists():
        if tail not in METHODS:
            raise UsageError(f"--train {text}: unknown method {tail!r} (expected one of {', '.join(METHODS)})")
        text, method = head, tail
    else:
        method = default_method
    path, split = parse_data_arg(text, "train")
    if not path.is_file():
        raise UsageError(f"--train {spec}: {path}: no such file")
    if split is not None and split.lower() == "test":
        raise UsageError(f"--train {spec}: a test split is never trained on (it is kept for reporting)")
    return TrainSet(path, method, split or "train")


@dataclass(frozen=True)
class TrainingData:
    """Columns for a `datasets.Dataset`, in loss order, and what was read to make them."""

    columns: dict[str, list]
    stats: dict[str, int | float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))


def check_pairs(data: StsData, path: Path) -> None:
    """Fail on a pair with an empty sentence or a score that is not a finite number."""
    for i, line in enumerate(data.lines):
        if not data.sentences1[i] or not data.sentences2[i]:
            raise DataError(f"{path}:{line}: empty sentence")
        if not math.isfinite(data.scores[i]):
            raise DataError(f"{path}:{line}: score {data.scores[i]} is not a finite number")


def cosent_pairs(path: Path, max_score: float | None = None, split: str = "train") -> TrainingData:
    """Scored pairs (STS-B, SICK, s1/s2/score, headerless 3 columns, 0/1 labels), scores divided by the maximum.

    The maximum is `max_score` when given (every score must be within [0, max_score]),
    else the largest score in the file. Files with a split column give `split`.
    """
    if max_score is not None and not max_score > 0:
        raise UsageError(f"--max-score must be positive, got {max_score}")
    data = load_sts(path, split)
    check_pairs(data, path)
    top = max_score if max_score is not None else float(data.scores.max())
    for i, line in enumerate(data.lines):
        if not 0 <= data.scores[i] <= top:
            raise DataError(f"{path}:{line}: score {data.scores[i]:g} is outside [0, {top:g}]" + (" (--max-score)" if max_score else ""))
    if len(set(data.scores.tolist())) < 2:
        raise DataError(f"{path}: every pair has the same score {data.scores[0]:g}; CoSENT learns from differences in score")
    return TrainingData(
        {"sentence1": data.sentences1, "sentence2": data.sentences2, "score": (data.scores / top).tolist()},
        {"pairs": len(data), "max_score": top},
    )


def _is_plain_text(path: Path) -> bool:
    """True for a one-sentence-per-line file: a .txt-like name whose first non-blank line has no tab."""
    if CorpusSpec(path).resolved_format() != "text":
        return False
    first = next((line for _, line in decoded_lines(path) if line.strip()), "")
    return "\t" not in first


def unsup_sentences(path: Path, split: str = "train") -> TrainingData:
    """Distinct sentences, each as an (anchor, positive) pair with itself: dropout makes the two views differ.

    Reads one sentence per line, or both sentence columns of any pair file `load_sts` reads.
    """
    if _is_plain_text(path):
        sentences = [line.strip() for _, line in decoded_lines(path) if line.strip()]
    else:
        data = load_sts(path, split)
        check_pairs(data, path)
        sentences = data.sentences1 + data.sentences2
    distinct = list(dict.fromkeys(sentences))
    if len(distinct) < 2:
        raise DataError(f"{path}: needs at least 2 distinct sentences for in-batch negatives, found {len(distinct)}")
    return TrainingData({"anchor": distinct, "positive": list(distinct)}, {"sentences": len(sentences), "distinct": len(distinct)})


def _table_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank line: CSV for .csv files, tab-separated otherwise."""
    if CorpusSpec(path).resolved_format() == "csv":
        yield from ((n, row) for n, row in csv_rows(path, decoded_lines(path)) if any(cell.strip() for cell in row))
    else:
        yield from ((n, line.split("\t")) for n, line in decoded_lines(path) if line.strip())


def _string_list(record: dict, key: str, where: str) -> list[str]:
    value = record.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise DataError(f"{where}: field {key!r} must be a non-empty list of non-empty strings")
    return [v.strip() for v in value]


def _jsonl_triplets(path: Path) -> list[tuple[str, str, str]]:
    """One triplet per positive; the i-th positive gets the (i mod len)-th hard negative."""
    triplets = []
    for lineno, line in decoded_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        record = json_object(line, where)
        query = record.get("query")
        if not isinstance(query, str) or not query.strip():
            raise DataError(f"{where}: field 'query' must be a non-empty string")
        positives, negatives = _string_list(record, "pos", where), _string_list(record, "neg", where)
        triplets += [(query.strip(), pos, negatives[i % len(negatives)]) for i, pos in enumerate(positives)]
    return triplets


def _nli_triplets(path: Path, rows: list[tuple[int, list[str]]], at: tuple[int, int, int]) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    """Triplets from labeled pairs: for each premise, entailed hypotheses are positives, contradicting ones hard negatives.

    Contradiction is symmetric, so a contradiction pair also gives the hypothesis's own
    premise entry a negative. Premises without both a positive and a negative are left out.
    """
    positives: dict[str, list[str]] = defaultdict(list)
    negatives: dict[str, list[str]] = defaultdict(list)
    for lineno, row in rows:
        if len(row) <= max(at):
            raise DataError(f"{path}:{lineno}: expected at least {max(at) + 1} fields, found {len(row)}")
        premise, hypothesis, label = (row[i].strip() for i in at)
        if not premise or not hypothesis:
            raise DataError(f"{path}:{lineno}: empty sentence")
        label = label.lower()
        if label == "entailment":
            positives[premise].append(hypothesis)
        elif label == "contradiction":
            negatives[premise].append(hypothesis)
            negatives[hypothesis].append(premise)
        elif label not in {"neutral", "-", ""}:
            raise DataError(f"{path}:{lineno}: unknown label {label!r} (expected entailment, neutral or contradiction)")
    triplets = [
        (premise, pos, negatives[premise][i % len(negatives[premise])])
        for premise, pos_list in positives.items()
        if negatives.get(premise)
        for i, pos in enumerate(pos_list)
    ]
    return triplets, {"pairs": len(rows), "premises_with_positive": len(positives), "premises_without_negative": sum(1 for p in positives if not negatives.get(p))}


def sup_triplets(path: Path) -> TrainingData:
    """(anchor, positive, negative) triplets from JSONL query/pos/neg, a 3-column table, or NLI-labeled pairs."""
    stats: dict[str, int | float] = {}
    if CorpusSpec(path).resolved_format() == "jsonl":
        triplets = _jsonl_triplets(path)
    else:
        rows = list(_table_rows(path))
        if not rows:
            raise DataError(f"{path}: empty file")
        header = [cell.strip() for cell in rows[0][1]]
        nli = next((layout for layout in _NLI_LAYOUTS if set(layout) <= set(header)), None)
        if nli:
            triplets, stats = _nli_triplets(path, rows[1:], tuple(header.index(name) for name in nli))
        else:
            body = rows[1:] if tuple(h.lower() for h in header) == _TRIPLET_HEADER else rows
            triplets = []
            for lineno, row in body:
                cells = [cell.strip() for cell in row]
                if len(cells) != 3 or not all(cells):
                    raise DataError(f"{path}:{lineno}: expected 3 non-empty fields (anchor, positive, negative), found {len(cells)}")
                triplets.append((cells[0], cells[1], cells[2]))
    if not triplets:
        raise DataError(f"{path}: no (anchor, positive, hard negative) triplets could be built")
    anchors, positives, negatives = (list(column) for column in zip(*triplets))
    return TrainingData({"anchor": anchors, "positive": positives, "negative": negatives}, {**stats, "triplets": len(triplets)})


def read_training_data(method: str, path: Path, max_score: float | None = None, split: str = "train") -> TrainingData:
    """The adapter for `method`, run over the whole file (so every row is checked up front)."""
    if method in SCORED_METHODS:
        return cosent_pairs(path, max_score, split)
    if max_score is not None:
        raise UsageError(f"--max-score only applies to {' and '.join(SCORED_METHODS)}, not {method}")
    if method == "simcse-unsup":
        return unsup_sentences(path, split)
    if method == "simcse-sup":
        return sup_triplets(path)
    raise UsageError(f"unknown training method {method!r} (expected one of {', '.join(METHODS)})")
