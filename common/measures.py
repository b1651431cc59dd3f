"""The one implementation of each measure: STS correlations, exact k-NN, recall@k.

index/ (tuning), embedder/ (choosing a reduced dimension) and eval/ all call these,
so a number means the same thing wherever it is printed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import faiss
import numpy as np

from errors import DataError


@dataclass(frozen=True)
class StsResult:
    """Correlations in [-1, 1] between predicted similarities and gold scores over `n` pairs."""

    spearman: float
    pearson: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def pair_cosines(vectors: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine of rows `first[i]` and `second[i]` of `vectors` (normalized here, computed in float64)."""
    v = np.asarray(vectors, dtype=np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return np.einsum("ij,ij->i", v[first], v[second])


def sts_correlations(predicted: np.ndarray, gold: np.ndarray) -> StsResult:
    """Spearman and Pearson correlation of predicted similarities against gold scores."""
    from scipy.stats import pearsonr, spearmanr  # here: scipy.stats costs ~1 s to import, and index/ and queries never call this

    predicted, gold = np.asarray(predicted, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if len(gold) < 2:
        raise DataError(f"a correlation needs at least 2 pairs, got {len(gold)}")
    if np.ptp(gold) == 0:
        raise DataError("every gold score is the same: a correlation with them is undefined")
    return StsResult(float(spearmanr(predicted, gold).statistic), float(pearsonr(predicted, gold).statistic), len(gold))


def exact_knn(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k of each query over `base` rows (FAISS brute force): (scores, row positions)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    base = np.ascontiguousarray(base, dtype=np.float32)
    return faiss.knn(queries, base, min(k, len(base)), metric=faiss.METRIC_INNER_PRODUCT)


def recall_at_k(found_ids: np.ndarray, true_ids: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:k] ∩ true[:k]| / |true[:k]| (ids -1 are padding and never count)."""
    found_ids, true_ids = np.atleast_2d(found_ids)[:, :k], np.atleast_2d(true_ids)[:, :k]
    if len(found_ids) != len(true_ids):
        raise ValueError(f"{len(found_ids)} result rows but {len(true_ids)} ground-truth rows")
    scores = []
    for found, true in zip(found_ids.tolist(), true_ids.tolist()):
        truth = {i for i in true if i >= 0}
        if truth:
            scores.append(len(truth.intersection(i for i in found if i >= 0)) / len(truth))
    return float(np.mean(scores)) if scores else 1.0


def drop_self(ids: np.ndarray, self_ids: np.ndarray, k: int) -> np.ndarray:
    """Each row without the query's own id, cut to k: queries drawn from the corpus would find themselves."""
    rows = [[i for i in row if i != own][:k] for row, own in zip(np.asarray(ids).tolist(), np.asarray(self_ids).tolist())]
    return np.array([row + [-1] * (k - len(row)) for row in rows], dtype=np.int64).reshape(len(rows), k)


class StreamingExactTopK:
    """Exact inner-product top-k of a few queries over vectors seen chunk by chunk (no vector is kept)."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.k = k
        self._scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self._ids = np.full((len(queries), k), -1, dtype=np.int64)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Merge one chunk (`vectors` with their `ids`) into the running top-k."""
        if not len(self.queries) or not len(vectors):
            return
        scores, local = exact_knn(self.queries, vectors, self.k)
        both_scores = np.concatenate([self._scores, scores], axis=1)
        both_ids = np.concatenate([self._ids, np.where(local >= 0, ids[np.maximum(local, 0)], -1)], axis=1)
        order = np.argsort(-both_scores, axis=1, kind="stable")[:, : self.k]
        self._scores, self._ids = np.take_along_axis(both_scores, order, 1), np.take_along_axis(both_ids, order, 1)

    @property
    def ids(self) -> np.ndarray:
        return self._ids
