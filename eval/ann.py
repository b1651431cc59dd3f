"""ANN quality of an index: recall@k of its own search against exact search over the same documents, and QPS.

The exact answer comes from re-encoding every stored text with the index's model
(streamed, nothing held at once), so it is exact whatever the index type keeps:
lossy codes (PQ, SQ8) are measured against the true vectors, not their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from common.measures import StreamingExactTopK, drop_self, recall_at_k
from common.progress import progress_bar
from errors import DataError
from index.quality import measure_qps
from index.search import SearchIndex


@dataclass(frozen=True)
class AnnResult:
    """recall@k of the index's search against exact search, and its queries per second."""

    ann_recall: float
    k: int
    queries: int
    qps_batch: float
    qps_single: float
    index_type: str
    search_params: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def exact_ids(index: SearchIndex, queries: np.ndarray, k: int, batch_size: int = 64) -> np.ndarray:
    """Exact top-k ids per query over freshly encoded stored texts."""
    exact = StreamingExactTopK(queries, k)
    with progress_bar(index.store.count(), "exact search", "doc") as bar:
        for ids, texts in index.store.iter_texts():
            exact.add(index.encoder.encode(texts, batch_size, show_progress=False), np.asarray(ids, dtype=np.int64))
            bar.update(len(ids))
    return exact.ids


def evaluate_ann(
    index: SearchIndex, n_queries: int = 200, k: int = 10, query_texts: Sequence[str] | None = None, seed: int = 0, batch_size: int = 64
) -> AnnResult:
    """Recall@k and QPS on `query_texts`, or on `n_queries` stored documents (each one's own id left out of both answers)."""
    if query_texts is None:
        sample = index.store.sample(n_queries, seed)
        if not sample:
            raise DataError(f"{index.path}: the index has no documents")
        texts, own = list(sample.values()), np.fromiter(sample, dtype=np.int64)
    else:
        texts, own = list(query_texts), None
    vectors = index.encoder.encode(texts, batch_size)
    depth = k + 1 if own is not None else k
    truth = exact_ids(index, vectors, depth, batch_size)
    found = index.search_ids(vectors, depth)[1]
    if own is not None:
        truth, found = drop_self(truth, own, k), drop_self(found, own, k)

    def one_at_a_time(batch: np.ndarray, kk: int) -> None:
        for row in batch:
            index.search_ids(row[None, :], kk)

    return AnnResult(
        ann_recall=recall_at_k(found, truth, k),
        k=k,
        queries=len(texts),
        qps_batch=measure_qps(lambda q, kk: index.search_ids(q, kk), vectors, k),
        qps_single=measure_qps(one_at_a_time, vectors, k),
        index_type=index.manifest.index_type,
        search_params=dict(index.manifest.search_params),
    )
