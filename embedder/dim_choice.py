"""Measure what a reduction keeps (STS Spearman, recall@10 vs full-dim search), sweep dims, choose k.

Measures work on embeddings computed once at full dimension: a reduction is a
linear map, so every candidate k is scored without running the encoder again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from sentence_transformers import SentenceTransformer

from common.measures import drop_self, exact_knn, pair_cosines, recall_at_k, sts_correlations
from common.sts_data import StsData
from embedder.encoding import encode
from embedder.reduction import LinearMap, truncation_map
from errors import DataError

# The sweep list, extended with 16 and 8 so that small models have candidates too.
SWEEP_DIMS = (512, 384, 256, 192, 128, 96, 64, 32, 16, 8)
RECALL_K = 10
RECALL_QUERIES = 1000


def _normalized(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _reduced(x: np.ndarray, reduction: LinearMap | None) -> np.ndarray:
    """Normalized vectors as the (reduced) model would return them."""
    return _normalized(x if reduction is None else reduction.transform(x))


class Measure(Protocol):
    """A quality number for a reduction; `full` is its value without reduction."""

    name: str
    full: float

    def __call__(self, reduction: LinearMap | None) -> float: ...


@dataclass
class StsMeasure:
    """Spearman correlation of cosine similarity with gold scores on an STS split."""

    vectors: np.ndarray  # raw embeddings of the distinct sentences
    first: np.ndarray  # row of each pair's first sentence
    second: np.ndarray
    gold: np.ndarray
    name: str = "spearman"
    full: float = float("nan")

    def __post_init__(self) -> None:
        self.full = self(None)

    def __call__(self, reduction: LinearMap | None) -> float:
        vectors = self.vectors if reduction is None else reduction.transform(self.vectors)
        return sts_correlations(pair_cosines(vectors, self.first, self.second), self.gold).spearman


def sts_measure(model: SentenceTransformer, data: StsData, batch_size: int = 64) -> StsMeasure:
    """Encode each distinct sentence of `data` once (raw model output) for scoring reductions."""
    unique, first, second = data.distinct()
    return StsMeasure(encode(model, unique, batch_size, normalize=False), first, second, data.scores)


def _neighbours(vectors: np.ndarray, queries: int, k: int) -> np.ndarray:
    """Row positions of each query row's k nearest other rows by cosine (the query itself excluded)."""
    _, ids = exact_knn(vectors[:queries], vectors, k + 1)
    return drop_self(ids, np.arange(queries), k)


@dataclass
class RecallMeasure:
    """Recall@10 of exact search on reduced vectors against exact search at full dimension.

    The first `queries` rows are the queries, all rows the database; a query's own row is excluded.
    """

    vectors: np.ndarray
    queries: int = RECALL_QUERIES
    name: str = "recall@10"
    full: float = 1.0

    def __post_init__(self) -> None:
        if len(self.vectors) <= RECALL_K:
            raise DataError(f"recall@{RECALL_K} needs more than {RECALL_K} fit sentences, got {len(self.vectors)}")
        self.queries = min(self.queries, len(self.vectors))
        self._truth = _neighbours(_normalized(self.vectors), self.queries, RECALL_K)

    def __call__(self, reduction: LinearMap | None) -> float:
        return recall_at_k(_neighbours(_reduced(self.vectors, reduction), self.queries, RECALL_K), self._truth, RECALL_K)


def candidate_dims(model_dim: int) -> list[int]:
    """Sweep dimensions no larger than the model's, largest first."""
    return [k for k in SWEEP_DIMS if k <= model_dim]


@dataclass(frozen=True)
class Score:
    """Mean and standard deviation of a measure over one or more reductions (JL: several seeds)."""

    mean: float
    std: float = 0.0

    @classmethod
    def of(cls, values: Sequence[float]) -> Score:
        return cls(float(np.mean(values)), float(np.std(values)) if len(values) > 1 else 0.0)


@dataclass(frozen=True)
class SweepRow:
    """One (method, k) cell of a sweep; method 'full' is the unreduced model."""

    method: str
    dim: int
    scores: dict[str, Score]

    def as_dict(self) -> dict:
        return {"method": self.method, "dim": self.dim, **{name: {"mean": s.mean, "std": s.std} for name, s in self.scores.items()}}


def sweep(
    model_dim: int,
    measures: Sequence[Measure],
    whitening: Callable[[int], LinearMap | None],
    jl: Callable[[int, int], LinearMap],
    seeds: Sequence[int] = range(5),
) -> list[SweepRow]:
    """Score full dim, then whitening, JL (over `seeds`) and truncation (below full dim) at every candidate dim.

    `whitening(k)` returns None where the fit corpus cannot support k dims; that row is left out.
    """
    rows = [SweepRow("full", model_dim, {m.name: Score(m.full) for m in measures})]
    for k in candidate_dims(model_dim):
        if (white := whitening(k)) is not None:
            rows.append(SweepRow("whiten", k, {m.name: Score(m(white)) for m in measures}))
        projections = [jl(k, seed) for seed in seeds]
        rows.append(SweepRow("jl", k, {m.name: Score.of([m(p) for p in projections]) for m in measures}))
        if k < model_dim:
            rows.append(SweepRow("truncate", k, {m.name: Score(m(truncation_map(model_dim, k))) for m in measures}))
    return rows


@dataclass(frozen=True)
class Choice:
    """Result of `--dim auto`: the chosen k (None: no reduction keeps the target) and what was measured."""

    dim: int | None
    measure: str
    target: float
    full: float
    scores: dict[int, float]

    def as_dict(self) -> dict:
        return {"dim": self.dim, "measure": self.measure, "target": self.target, "full": self.full, "scores": self.scores}


def choose_dim(candidates: Sequence[int], measure: Measure, make: Callable[[int], LinearMap], target: float = 0.99) -> Choice:
    """The smallest candidate k whose score is at least `target` × the full-dim score."""
    scores = {k: measure(make(k)) for k in sorted(candidates)}
    good = [k for k, score in scores.items() if score >= target * measure.full]
    return Choice(good[0] if good else None, measure.name, target, measure.full, scores)


def shown(measure: str, value: float) -> str:
    """A measure as text output shows it: Spearman ×100 with 2 decimals (as every table and log line), others as a fraction."""
    return f"{value * 100:.2f}" if measure == "spearman" else f"{value:.4f}"


def _cell(measure: str, score: Score | None, spread: bool) -> str:
    if score is None:
        return f"{'':>20}"
    return f"{f'{shown(measure, score.mean)} ± {shown(measure, score.std)}' if spread else shown(measure, score.mean):>20}"


def format_sweep(rows: Sequence[SweepRow], documents: int) -> str:
    """The sweep as a text table: per dim, bytes/vector, the JL-guaranteed ε, and each measure for whitening, JL (mean ± std) and truncation."""
    from embedder.reduction import jl_epsilon

    full, names = rows[0], list(rows[0].scores)
    by_key = {(r.method, r.dim): r for r in rows[1:]}
    methods = ("whiten", "jl", "truncate")
    header = f"{'dim':>5} {'bytes/vec':>9} {'JL ε':>6}  " + "  ".join(f"{m + ' ' + n + (' ×100' if n == 'spearman' else ''):>20}" for n in names for m in methods)
    lines = [header, "-" * len(header)]
    blank = "  " + _cell("", None, False)
    lines.append(f"{'full':>5} {4 * full.dim:>9} {'-':>6}  " + "  ".join(_cell(n, full.scores[n], False) + blank * 2 for n in names))
    for dim in sorted({r.dim for r in rows[1:]}, reverse=True):
        found = [by_key.get((m, dim)) for m in methods]
        eps = jl_epsilon(documents, dim)
        cells = ["  ".join(_cell(n, row.scores[n] if row else None, m == "jl") for m, row in zip(methods, found)) for n in names]
        lines.append(f"{dim:>5} {4 * dim:>9} {'none' if eps is None else f'{eps:.2f}':>6}  " + "  ".join(cells))
    return "\n".join(lines)
