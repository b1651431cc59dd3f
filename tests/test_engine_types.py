"""Each index type against exact search on clustered synthetic vectors, through our own index layer."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from index.plan import plan_for_type, search_param_candidates
from common.measures import recall_at_k
from index.quality import recall_plateaued, tune_and_measure
from index.vectors import VectorIndex

N, DIM, CENTRES, QUERIES = 20_000, 32, 200, 200


def clustered(n: int, rng: np.random.Generator, means: np.ndarray) -> np.ndarray:
    """Normalized points of a Gaussian mixture around `means` (neighbourhoods exist, as in real embeddings)."""
    points = means[rng.integers(0, len(means), n)] + rng.standard_normal((n, means.shape[1]), dtype=np.float32) * 0.1
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(0)
    means = rng.standard_normal((CENTRES, DIM), dtype=np.float32)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    base, queries = clustered(N, rng, means), clustered(QUERIES, rng, means)
    ids = np.arange(N, dtype=np.int64) * 3 + 7  # ids are not positions
    _, exact = faiss.knn(queries, base, 11, metric=faiss.METRIC_INNER_PRODUCT)
    return base, ids, queries, ids[exact]


# Lower bounds each type reaches with margin on this data (seeded; measured well above them).
@pytest.mark.parametrize("index_type,bound", [
    ("flat", 1.0), ("sq8", 0.85), ("ivf", 0.95), ("hnsw", 0.95),
    pytest.param("ivfpq", 0.4, marks=pytest.mark.slow),  # PQ training takes ~15 s on 2 cores
])
def test_type_reaches_its_recall_against_exact_search(synthetic, index_type, bound):
    base, ids, queries, truth = synthetic
    plan = plan_for_type(index_type, N, DIM)
    vectors = VectorIndex.create(plan, DIM)
    if vectors.needs_training():
        vectors.train(base[np.random.default_rng(1).choice(N, min(plan.training_size(N), 10_000), replace=False)])
    vectors.add(base, ids)
    not_in_corpus = np.full(QUERIES, -2)
    quality = tune_and_measure(plan, vectors.apply_search_params, lambda q, k: vectors.search(q, k)[1], queries, not_in_corpus, truth, 0.95)
    scores, found = vectors.search(queries, 10)
    recall = recall_at_k(found, truth, 10)
    assert recall >= bound
    assert quality.recall_at_10 == pytest.approx(recall)
    assert set(found.ravel().tolist()) <= set(ids.tolist())
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    if plan.tunable and quality.recall_at_10 >= 0.95:
        # The tuned value is the cheapest that reached the target: the one before it did not.
        values = [v for v, _ in quality.tried]
        assert quality.search_params[plan.tunable] == values[-1]
        assert all(r < 0.95 for _, r in quality.tried[:-1])
    elif plan.tunable:
        # Target out of reach (PQ caps recall): the sweep stopped once recall plateaued and kept the best value.
        recalls = [r for _, r in quality.tried]
        assert len(recalls) < len(search_param_candidates(plan))
        assert recall_plateaued(recalls) and not recall_plateaued(recalls[:-1])
        assert quality.search_params[plan.tunable] == max(quality.tried, key=lambda t: t[1])[0]
