"""Binary index types (sign bits, Hamming distance): against exact float search, through updates, resume and shards."""

from __future__ import annotations

import numpy as np
import pytest

from errors import UsageError
from index.assemble import assemble_index
from index.build import BuildConfig, make_plan
from index.partial import PartialBuild
from index.plan import plan_for_type
from index.shards import ShardedVectors
from index.vectors import VectorIndex
from common.corpus import Document

DIM = 384


def normalized(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def separated(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n points in 50 far-apart clusters, and 200 queries that are corpus points moved a little (each has one clear nearest point)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, DIM))
    base = normalized(centres[rng.integers(0, 50, n)] + 0.3 * rng.standard_normal((n, DIM)))
    queries = normalized(base[rng.choice(n, 200, replace=False)] + 0.01 * rng.standard_normal((200, DIM)))
    return base, queries


@pytest.mark.parametrize("index_type", ["binary", "binary-hnsw"])
def test_binary_top1_equals_flat_on_well_separated_clusters(index_type):
    base, queries = separated(5_000)
    ids = np.arange(len(base), dtype=np.int64) * 2 + 1
    flat, binary = VectorIndex.create(plan_for_type("flat", 5_000, DIM), DIM), VectorIndex.create(plan_for_type(index_type, 5_000, DIM), DIM)
    for vectors in (flat, binary):
        vectors.add(base, ids)
    exact_scores, exact = flat.search(queries, 1)
    scores, found = binary.search(queries, 10)
    assert np.array_equal(found[:, 0], exact[:, 0])
    assert binary.inner.code_size == DIM // 8  # one bit per dimension
    # Scores estimate the cosine from the Hamming distance: best first, close to the exact cosine of the top hit.
    assert np.all(np.diff(scores, axis=1) <= 1e-6) and np.abs(scores[:, 0] - exact_scores[:, 0]).max() < 0.1


def test_a_dimension_not_divisible_by_8_is_refused_naming_it():
    with pytest.raises(UsageError, match="divisible by 8.*gives 36"):
        make_plan(BuildConfig(index_type="binary-hnsw"), 100, 36)


def test_binary_shards_give_the_hits_of_one_binary_index(tmp_path):
    base, queries = separated(3_000, seed=1)
    ids = np.arange(len(base), dtype=np.int64) + 10
    partial = PartialBuild.open(tmp_path / "sharded", {"test": 1}, DIM, resume=False)
    for start in range(0, len(base), 1_000):
        partial.record_chunk(base[start : start + 1_000], ids[start : start + 1_000], [Document(int(i), f"doc {i}") for i in ids[start : start + 1_000]])
    plan = plan_for_type("binary", len(base), DIM)
    manifest = assemble_index(partial, tmp_path / "sharded", plan, BuildConfig(index_type="binary"), "test-model", {}, {}, shards=2)
    assert [s["documents"] for s in manifest.shards] == [1_500, 1_500] and manifest.index_type == "binary"
    sharded = ShardedVectors.read(tmp_path / "sharded", manifest.shards, "binary", {})
    whole = VectorIndex.create(plan, DIM)
    whole.add(base, ids)
    (s1, i1), (s2, i2) = sharded.search(queries, 10), whole.search(queries, 10)
    assert np.array_equal(s1, s2)
    # Equal Hamming distances may come in either order: compare the id sets of each distance.
    for row in range(len(queries)):
        assert {(s, i) for s, i in zip(s1[row], i1[row]) if s > s1[row, -1]} == {(s, i) for s, i in zip(s2[row], i2[row]) if s > s2[row, -1]}
