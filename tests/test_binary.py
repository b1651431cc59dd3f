"""Binary index types (sign bits, Hamming distance): against exact float search, through updates, resume and shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from common.corpus import Document
from common.measures import recall_at_k
from conftest import TINY_WORDS
from errors import DataError, UsageError
from index.assemble import assemble_index
from index.build import BuildConfig, make_plan
from index.manifest import Manifest
from index.partial import PartialBuild
from index.plan import plan_for_type
from index.rescore import FLOATS_NAME, FloatStore
from index.shards import ShardedVectors
from index.vectors import VectorIndex
from simsearch import api

DIM = 384


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


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
    assert manifest.search_params == {"rescore": 4} and manifest.floats["rows"] == 3_000
    assert [(tmp_path / "sharded" / s["path"] / FLOATS_NAME).is_file() for s in manifest.shards] == [True, True]
    sharded = ShardedVectors.read(tmp_path / "sharded", manifest.shards, "binary", manifest.search_params, floats=manifest.floats)
    whole = VectorIndex.create(plan, DIM)
    whole.add(base, ids)
    whole.floats = FloatStore.of(base, ids)
    whole.apply_search_params({"rescore": 4})
    (s1, i1), (s2, i2) = sharded.search(queries, 10), whole.search(queries, 10)
    assert np.array_equal(i1[:, 0], i2[:, 0])
    # Each shard re-scores its own top 40, a superset of the whole index's 40 candidates: never a worse hit at any rank.
    assert np.all(s1 >= s2 - 1e-6)
    assert np.allclose(s1[:, 0], np.einsum("qd,qd->q", queries, base[i1[:, 0] - 10]), atol=1e-5)

def tied_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """16-dim corpus where 30 far vectors share the query's sign bits (Hamming 0) and come first, before the 10 true nearest (also Hamming 0)."""
    rng = np.random.default_rng(3)
    query = normalized(np.ones((1, 16)))
    skewed = np.full((30, 16), 0.01) + np.eye(16)[rng.integers(0, 16, 30)] * 3  # all positive, cosine ~0.3
    nearest = np.ones((10, 16)) + 0.05 * rng.random((10, 16))  # all positive, cosine ~1
    others = rng.standard_normal((200, 16)) - 0.5  # mixed signs: Hamming > 0 mostly
    base = normalized(np.vstack([skewed, nearest, others]))
    return base, np.arange(len(base), dtype=np.int64), query


def test_rescoring_finds_the_nearest_neighbours_that_hamming_ties_hide():
    base, ids, query = tied_case()
    truth = np.argsort(-(base @ query[0]))[:10]
    assert set(truth) == set(range(30, 40))
    plain = VectorIndex.create(plan_for_type("binary", len(base), 16), 16)
    plain.add(base, ids)
    _, hamming_only = plain.search(query, 10)
    rescored = VectorIndex.create(plan_for_type("binary", len(base), 16), 16)
    rescored.add(base, ids)
    rescored.floats = FloatStore.of(base, ids)
    rescored.apply_search_params({"rescore": 4})
    scores, found = rescored.search(query, 10)
    assert recall_at_k(hamming_only, truth[None, :], 10) < 0.5  # ties hide them
    assert recall_at_k(found, truth[None, :], 10) == 1.0
    assert np.allclose(scores[0], base[found[0]] @ query[0], atol=1e-6)  # exact cosines, best first
    assert np.all(np.diff(scores[0]) <= 0)


def test_float_store_round_trip_keeps_rows_in_step_with_adds_and_removes(tmp_path):
    rng = np.random.default_rng(0)
    vectors = normalized(rng.standard_normal((100, 8)))
    ids = rng.permutation(1000)[:100].astype(np.int64)
    store = FloatStore.of(vectors, ids)
    store.remove(ids[:10])
    store.add(vectors[:3] * -1, ids[:3])  # re-added with new vectors
    store.add(vectors[50:52] + 1, np.array([5000, 5001]))
    store.write(tmp_path, "ab" * 16)
    back = FloatStore.read(tmp_path, "ab" * 16, 8)
    assert len(back.sorted_ids) == 100 - 10 + 3 + 2
    assert np.array_equal(back.vectors[back.lookup(ids[:3])], vectors[:3] * -1)
    assert np.array_equal(back.vectors[back.lookup(ids[10:])], vectors[10:])
    assert np.array_equal(back.vectors[back.lookup(np.array([5001]))], vectors[51:52] + 1)
    with pytest.raises(DataError, match=f"no float vector for id {ids[5]}"):
        back.lookup(ids[5:6])
    with pytest.raises(DataError, match="another version"):
        FloatStore.read(tmp_path, "cd" * 16, 8)
    with open(tmp_path / FLOATS_NAME, "r+b") as handle:
        handle.truncate((tmp_path / FLOATS_NAME).stat().st_size - 4)
    with pytest.raises(DataError, match="truncated"):
        FloatStore.read(tmp_path, "ab" * 16, 8)


@pytest.fixture(scope="module")
def binary_index(tmp_path_factory, tiny_model_dir) -> Path:
    """A binary index (default rescoring) of 300 short texts in the tiny model's words, ids 1000..1299."""
    folder = tmp_path_factory.mktemp("binary")
    corpus = folder / "docs.txt"
    rng = np.random.default_rng(0)
    corpus.write_text("".join(" ".join(rng.choice(TINY_WORDS, size=rng.integers(3, 8))) + f" {i}\n" for i in range(300)), encoding="utf-8")
    result = run("index", "build", corpus, "-o", folder / "idx", "--model", tiny_model_dir, "--type", "binary")
    assert result.exit_code == 0, result.output
    return folder / "idx"


def test_binary_build_keeps_floats_and_rescores_to_exact_cosines(binary_index, tiny_model_dir):
    info = json.loads(run("index", "info", binary_index, "--json").stdout)
    assert info["search_params"] == {"rescore": 4} and info["floats"]["rows"] == 300 and (binary_index / "floats.bin").is_file()
    memory = info["memory"]
    assert memory["float32_bytes_per_vector"] == 128 and memory["ram_bytes_per_vector"] < 128 / 2  # 4 bytes of bits + ids
    assert memory["disk_bytes_per_vector"] > 128  # the floats stay on disk
    assert "bytes per vector in RAM" in run("index", "info", binary_index).stdout
    searcher = api.open_index(binary_index)
    query = searcher.encoder.encode(["the cat runs in the park"], 1)
    hits = searcher.search_vectors(query, k=5)[0]
    flat = VectorIndex.create(plan_for_type("flat", 300, 32), 32)
    stream = searcher.vectors.floats
    flat.add(np.asarray(stream.vectors[stream.rows]), np.asarray(stream.sorted_ids))
    exact_scores, exact_ids = flat.search(query, 300)
    exact = dict(zip(exact_ids[0].tolist(), exact_scores[0].tolist()))
    assert [h.score for h in hits] == pytest.approx([exact[h.id] for h in hits], abs=1e-5)  # exact cosines, not Hamming estimates
    searcher.vectors.apply_search_params({"rescore": 60})  # 5 x 60 candidates = the whole corpus: exact search
    assert [h.id for h in searcher.search_vectors(query, k=5)[0]] == exact_ids[0, :5].tolist()
    assert run("index", "verify", binary_index).exit_code == 0


@pytest.mark.parametrize("damage", ["missing", "truncated", "other-version"])
def test_a_bad_float_file_is_one_line_exit_1(binary_index, tmp_path, tiny_model_dir, damage):
    copy = tmp_path / "copy"
    shutil.copytree(binary_index.resolve(), copy)
    floats = copy / "floats.bin"
    if damage == "missing":
        floats.unlink()
    elif damage == "truncated":
        with open(floats, "r+b") as handle:
            handle.truncate(floats.stat().st_size - 100)
    else:
        other = tmp_path / "other"
        corpus = tmp_path / "same.txt"
        corpus.write_text("".join(f"{TINY_WORDS[i % len(TINY_WORDS)]} {i}\n" for i in range(300)), encoding="utf-8")
        assert run("index", "build", corpus, "-o", other, "--model", tiny_model_dir, "--type", "binary").exit_code == 0
        shutil.copyfile(other / "floats.bin", floats)  # same size, another version's floats
    result = run("query", copy, "a dog")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "floats.bin" in result.stderr
    if damage == "other-version":
        assert "another version" in result.stderr


@pytest.mark.parametrize("args,message", [
    (["--type", "binary", "--rescore", "0"], "at least 1"),
    (["--type", "binary", "--rescore", "-2"], "at least 1"),
    (["--type", "flat", "--rescore", "4"], "--rescore applies to"),
])
def test_bad_rescore_exits_2(tmp_path, tiny_corpus, tiny_model_dir, args, message):
    result = run("index", "build", tiny_corpus, "-o", tmp_path / "idx", "--model", tiny_model_dir, *args)
    assert result.exit_code == 2 and message in result.output and not (tmp_path / "idx").exists()


def test_rescore_on_sq8_and_off_on_binary(tmp_path, tiny_corpus, tiny_model_dir):
    assert run("index", "build", tiny_corpus, "-o", tmp_path / "sq8", "--model", tiny_model_dir, "--type", "sq8", "--rescore", "2").exit_code == 0
    assert Manifest.read(tmp_path / "sq8").search_params == {"rescore": 2} and (tmp_path / "sq8" / "floats.bin").is_file()
    assert run("index", "build", tiny_corpus, "-o", tmp_path / "bits", "--model", tiny_model_dir, "--type", "binary", "--rescore", "off").exit_code == 0
    manifest = Manifest.read(tmp_path / "bits")
    assert manifest.search_params == {} and not manifest.floats and not (tmp_path / "bits" / "floats.bin").exists()
    assert manifest.memory()["disk_bytes_per_vector"] < 32 / 8 + 8 + 64  # bits and ids (plus FAISS's small header per vector here)


def test_query_rescore_overrides_the_index_multiplier(binary_index, tmp_path, tiny_corpus, tiny_model_dir):
    def hits(*extra) -> list[tuple[int, float]]:
        result = run("query", binary_index, "the cat runs in the park", "--mode", "dense", "-k", "5", "--json", *extra)
        assert result.exit_code == 0, result.output
        return [(h["id"], h["score"]) for h in json.loads(result.stdout)["hits"]]

    searcher = api.open_index(binary_index)
    query = searcher.encoder.encode(["the cat runs in the park"], 1)[0]
    floats = searcher.vectors.floats

    def cosines(found: list[tuple[int, float]]) -> list[float]:
        return (np.asarray(floats.vectors)[floats.lookup(np.array([i for i, _ in found]))] @ query).tolist()

    hamming = [s for _, s in hits("--rescore", "off")]  # the codes' own estimates: cos(pi * h / 32) for whole distances h
    assert all(min(abs(s - np.cos(np.pi * h / 32)) for h in range(33)) < 1e-5 for s in hamming)
    default = hits()  # the index's x4: exact cosines of the hits it returns
    assert [s for _, s in default] == pytest.approx(cosines(default), abs=1e-5)
    exact = hits("--rescore", "60")  # 5 x 60 candidates: every document, so the exact top 5
    assert [s for _, s in exact] == pytest.approx(np.sort(np.asarray(floats.vectors) @ query)[::-1][:5].tolist(), abs=1e-5)
    assert run("index", "build", tiny_corpus, "-o", tmp_path / "flat", "--model", tiny_model_dir).exit_code == 0
    refused = run("query", tmp_path / "flat", "a dog", "--rescore", "2")
    assert refused.exit_code == 2 and "keeps no float vectors" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
