"""How good and how fast an index is: tune nprobe/efSearch to a recall target on held-out queries, and time it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from common.measures import drop_self, recall_at_k
from index.plan import IndexPlan, search_param_candidates


Search = Callable[[np.ndarray, int], np.ndarray]


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
