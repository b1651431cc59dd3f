"""How good and how fast an index is: recall@k against exact search, streamed exact top-k, QPS, tuning."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import faiss
import numpy as np

from index.plan import IndexPlan, search_param_candidates


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


class StreamingExactTopK:
    """Exact inner-product top-k of a few held-out queries over vectors seen chunk by chunk (nothing kept)."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.k = k
        self._scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self._ids = np.full((len(queries), k), -1, dtype=np.int64)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if not len(self.queries) or not len(vectors):
            return
        scores, local = faiss.knn(self.queries, np.ascontiguousarray(vectors, dtype=np.float32), min(self.k, len(vectors)), metric=faiss.METRIC_INNER_PRODUCT)
        both_scores = np.concatenate([self._scores, scores], axis=1)
        both_ids = np.concatenate([self._ids, np.where(local >= 0, ids[np.maximum(local, 0)], -1)], axis=1)
        order = np.argsort(-both_scores, axis=1, kind="stable")[:, : self.k]
        self._scores, self._ids = np.take_along_axis(both_scores, order, 1), np.take_along_axis(both_ids, order, 1)

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to persist (a resumed build continues from them)."""
        return {"queries": self.queries, "scores": self._scores, "ids": self._ids}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], k: int) -> StreamingExactTopK:
        exact = cls(state["queries"], k)
        exact._scores, exact._ids = state["scores"].copy(), state["ids"].copy()
        return exact

    @property
    def ids(self) -> np.ndarray:
        return self._ids


Search = Callable[[np.ndarray, int], np.ndarray]


def drop_self(ids: np.ndarray, self_ids: np.ndarray, k: int) -> np.ndarray:
    """Each row without the query's own id, cut to k: held-out queries are corpus vectors that would find themselves."""
    rows = [[i for i in row if i != own][:k] for row, own in zip(ids.tolist(), self_ids.tolist())]
    return np.array([row + [-1] * (k - len(row)) for row in rows], dtype=np.int64).reshape(len(rows), k)


def measure_qps(search: Search, queries: np.ndarray, k: int, min_seconds: float = 0.2) -> float:
    """Queries per second of `search` on the batch `queries`, repeated until `min_seconds` have passed."""
    done, start = 0, time.perf_counter()
    while True:
        search(queries, k)
        done += len(queries)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


@dataclass
class Quality:
    """Measured on held-out queries: recall@k with the chosen search parameters, QPS, and the tuning path."""

    recall_at_10: float
    qps: float
    queries: int
    search_params: dict[str, int] = field(default_factory=dict)
    tried: list[tuple[int, float]] = field(default_factory=list)
    target_recall: float | None = None

    def as_dict(self) -> dict:
        return {
            "recall_at_10": round(self.recall_at_10, 4), "qps": round(self.qps, 1), "queries": self.queries,
            "search_params": self.search_params, "tried": [[p, round(r, 4)] for p, r in self.tried],
            "target_recall": self.target_recall, "reached": self.target_recall is None or self.recall_at_10 >= self.target_recall,
        }


def recall_plateaued(recalls: list[float], steps: int = 2, gain: float = 0.002) -> bool:
    """True when each of the last `steps` doublings of the knob raised recall by less than `gain`."""
    if len(recalls) <= steps:
        return False
    return all(later - earlier < gain for earlier, later in zip(recalls[-steps - 1 :], recalls[-steps:]))


def tune_and_measure(
    plan: IndexPlan, set_param: Callable[[dict[str, int]], None], search: Search, queries: np.ndarray,
    self_ids: np.ndarray, true_ids: np.ndarray, target_recall: float, k: int = 10,
) -> Quality:
    """Try the plan's knob in increasing cost until recall@k reaches the target (else keep the best), then time it.

    The sweep also stops once recall has plateaued (quantization, not the search, caps it): scanning
    more lists or a wider graph would cost build time and buy nothing.
    """
    def recall() -> float:
        return recall_at_k(drop_self(search(queries, k + 1), self_ids, k), drop_self(true_ids, self_ids, k), k)

    tried: list[tuple[int, float]] = []
    chosen: dict[str, int] = {}
    for value in search_param_candidates(plan):
        set_param({plan.tunable: value})
        tried.append((value, recall()))
        if tried[-1][1] >= target_recall or recall_plateaued([r for _, r in tried]):
            break
    if tried:
        best = next((v for v, r in tried if r >= target_recall), max(tried, key=lambda t: t[1])[0])
        chosen = {plan.tunable: best}
        set_param(chosen)
    return Quality(recall(), measure_qps(search, queries, k), len(queries), chosen, tried, target_recall)
