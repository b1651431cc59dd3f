"""Dimension reduction: whitening and JL maths, the reduced model folder, choosing k, and the `reduce` CLI."""

from __future__ import annotations

import json
import random
from itertools import combinations

import numpy as np
import pytest
from click.testing import CliRunner
from sentence_transformers import SentenceTransformer
from sklearn.decomposition import PCA

from cli import main
from conftest import TINY_WORDS
from embedder import encode, load_model
from common.corpus import CorpusSpec
from embedder.dim_choice import Choice, RecallMeasure, choose_dim
from embedder.model_files import REDUCTION_MARKER as MARKER_NAME
from embedder.reduction import (
    CovarianceAccumulator,
    build_reduced_model,
    embed_corpus,
    fit_whitening,
    jl_epsilon,
    jl_map,
    jl_min_dim,
    save_model,
)
from errors import DataError
from index import Manifest
from simsearch import api


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def fit_file(tmp_path_factory):
    """400 random sentences in the tiny model's vocabulary (one per line)."""
    rng = random.Random(7)
    lines = [" ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(3, 9))) for _ in range(400)]
    path = tmp_path_factory.mktemp("fit") / "fit.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sts_file(tmp_path_factory):
    """A small s1,s2,score STS file in the tiny vocabulary."""
    rng = random.Random(3)
    rows = ["s1,s2,score"]
    for _ in range(60):
        a = [rng.choice(TINY_WORDS) for _ in range(5)]
        b = a[: rng.randint(0, 5)] + [rng.choice(TINY_WORDS) for _ in range(2)]
        rows.append(f"{' '.join(a)},{' '.join(b)},{len(set(a) & set(b))}")
    path = tmp_path_factory.mktemp("sts") / "sts.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_fit(tiny_model, fit_file):
    """Tiny-model embeddings of the fit corpus, accumulated in uneven chunks."""
    return embed_corpus(tiny_model, CorpusSpec(fit_file), batch_size=16, keep=1000, chunk_size=37)


def test_accumulator_matches_numpy_over_uneven_batches():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 8)) @ rng.normal(size=(8, 8)) + 5.0
    stats = CovarianceAccumulator(8)
    for start, stop in [(0, 1), (1, 300), (300, 301), (301, 1000)]:
        stats.update(x[start:stop])
    assert stats.count == 1000
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(stats.covariance(), np.cov(x, rowvar=False), atol=1e-10)


def test_whitened_fit_data_has_identity_covariance(tiny_fit):
    assert tiny_fit.documents == 400 and tiny_fit.sample.shape == (400, 32)
    whitening = fit_whitening(tiny_fit.stats)
    # The untrained tiny BERT's LayerNorm (gain 1, bias 0) gives token vectors with zero mean over the
    # hidden units, so the pooled embeddings lie in a 31-dim hyperplane: the 32nd direction is not whitened.
    assert whitening.rank == 31
    for k in (31, 16):
        y = whitening.map(k).transform(tiny_fit.sample)
        assert np.abs(np.cov(y, rowvar=False) - np.eye(k)).max() < 1e-3
        assert np.abs(y.mean(axis=0)).max() < 1e-6


def test_whitening_matches_sklearn_pca_up_to_sign():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 16)) @ rng.normal(size=(16, 16))
    stats = CovarianceAccumulator(16)
    for batch in np.array_split(x, 7):
        stats.update(batch)
    ours = fit_whitening(stats).map(10).transform(x)
    reference = PCA(n_components=10, whiten=True, svd_solver="full").fit_transform(x)
    signs = np.sign(np.sum(ours * reference, axis=0))
    assert np.abs(ours - reference * signs).max() < 1e-8


def test_whitening_beyond_the_fit_rank_is_a_clear_error():
    stats = CovarianceAccumulator(8)
    stats.update(np.random.default_rng(0).normal(size=(5, 8)))
    whitening = fit_whitening(stats)
    assert whitening.rank == 4  # 5 centred points span 4 dimensions
    whitening.map(4)
    with pytest.raises(DataError, match="spans only 4 dimensions"):
        whitening.map(6)


def test_jl_at_the_bound_keeps_pairwise_squared_distances_within_eps():
    n, d, eps = 40, 2000, 0.3
    k = jl_min_dim(n, eps)
    assert k == int(np.ceil(4 * np.log(n) / (eps**2 / 2 - eps**3 / 3)))
    assert jl_epsilon(n, k) <= eps and jl_epsilon(n, k - 1) > eps - 1e-3
    x = np.random.default_rng(0).normal(size=(n, d))
    y = jl_map(d, k, seed=0).transform(x)
    ratios = [np.sum((y[i] - y[j]) ** 2) / np.sum((x[i] - x[j]) ** 2) for i, j in combinations(range(n), 2)]
    assert 1 - eps <= min(ratios) and max(ratios) <= 1 + eps


def test_jl_matrix_is_seeded_gaussian_with_variance_one_over_k():
    a, b, c = jl_map(384, 64, seed=3), jl_map(384, 64, seed=3), jl_map(384, 64, seed=4)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert not np.array_equal(a.matrix, c.matrix)
    assert abs(a.matrix.var() * 64 - 1) < 0.05 and abs(a.matrix.mean()) < 0.01
    assert jl_epsilon(10_000, 10) is None  # far below the bound: nothing guaranteed


def test_reduced_model_saved_and_loaded_gives_identical_vectors(tiny_model_dir, tiny_fit, tmp_path):
    texts = ["a man is playing guitar", "stocks fell today", "the cat runs in the park"]
    reduction = fit_whitening(tiny_fit.stats).map(12)
    base = load_model(str(tiny_model_dir))
    raw = encode(base, texts, normalize=False)
    model = build_reduced_model(base, reduction)
    in_memory = model.encode(texts, convert_to_numpy=True)
    expected = reduction.transform(raw)
    np.testing.assert_allclose(in_memory, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)
    save_model(model, tmp_path / "reduced", {"method": "whiten"})
    loaded = SentenceTransformer(str(tmp_path / "reduced"), device="cpu").encode(texts, convert_to_numpy=True)
    assert loaded.shape == (3, 12)
    np.testing.assert_array_equal(loaded, in_memory)


class TableMeasure:
    """A measure with fixed scores per output dim, to test the choice rule alone."""

    name, full = "spearman", 0.80

    def __init__(self, scores):
        self.scores = scores

    def __call__(self, reduction):
        return self.scores[reduction.output_dim]


def test_choose_dim_takes_the_smallest_k_keeping_the_target():
    measure = TableMeasure({8: 0.70, 16: 0.795, 24: 0.79, 32: 0.81})
    choice = choose_dim([32, 24, 16, 8], measure, lambda k: jl_map(32, k))
    assert choice == Choice(16, "spearman", 0.99, 0.80, {8: 0.70, 16: 0.795, 24: 0.79, 32: 0.81})
    assert choose_dim([8, 24], measure, lambda k: jl_map(32, k)).dim is None  # nothing keeps 99 %: no reduction


def test_recall_measure_is_one_at_full_rank_and_drops_when_squeezed(tiny_fit):
    measure = RecallMeasure(tiny_fit.sample, queries=100)
    assert measure(None) == 1.0
    assert measure(jl_map(32, 2, seed=0)) < 0.6


def test_cli_whiten_auto_then_index_records_the_reduction(tiny_model_dir, fit_file, tiny_corpus, tmp_path):
    out = tmp_path / "whitened"
    result = run("reduce", "whiten", tiny_model_dir, "--fit", fit_file, "--dim", "auto", "--target", "0.5", "-o", out)
    assert result.exit_code == 0, result.output
    info = json.loads((out / MARKER_NAME).read_text())
    chosen = info["chosen_by"]
    assert info["method"] == "whiten" and chosen["measure"] == "recall@10" and info["fit_documents"] == 400
    assert info["output_dim"] == chosen["dim"] == min(int(k) for k, v in chosen["scores"].items() if v >= 0.5)
    assert "JL lemma for N=400" in result.stderr and f"auto chose k={chosen['dim']}" in result.stderr
    manifest = api.build(CorpusSpec(tiny_corpus), tmp_path / "idx", model=str(out))
    assert manifest.embedding_dim == info["output_dim"]
    assert Manifest.read(tmp_path / "idx").reduction == info


def test_auto_keeps_the_full_model_when_no_k_reaches_the_target(tiny_model_dir, fit_file, tmp_path):
    result = run("reduce", "whiten", tiny_model_dir, "--fit", fit_file, "--dim", "auto", "--target", "1", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "out" / MARKER_NAME).read_text())
    assert (info["method"], info["output_dim"], info["chosen_by"]["dim"]) == ("none", 32, None)
    assert max(info["chosen_by"]["scores"].values()) < 1.0
    assert "model without reduction (32 dims)" in result.stderr
    assert SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(["a red car"]).shape == (1, 32)


def test_cli_jl_auto_measures_dev_spearman(tiny_model_dir, sts_file, tmp_path):
    result = run("reduce", "jl", tiny_model_dir, "--dim", "auto", "--data", sts_file, "--target", "0.5", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    chosen = json.loads((tmp_path / "out" / MARKER_NAME).read_text())["chosen_by"]
    assert chosen["measure"] == "spearman" and set(chosen["scores"]) == {"8", "16"}  # JL below the model's 32 dims only
    assert chosen["dim"] == min((int(k) for k, v in chosen["scores"].items() if v >= 0.5 * chosen["full"]), default=None)


def test_cli_jl_fixed_dim_with_seed(tiny_model_dir, tmp_path):
    result = run("reduce", "jl", tiny_model_dir, "--dim", "8", "--seed", "5", "-o", tmp_path / "jl")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "jl" / MARKER_NAME).read_text())
    assert (info["method"], info["output_dim"], info["seed"]) == ("jl", 8, 5)
    vectors = SentenceTransformer(str(tmp_path / "jl"), device="cpu").encode(["a red car"])
    assert vectors.shape == (1, 8) and abs(np.linalg.norm(vectors) - 1) < 1e-5


@pytest.mark.parametrize("method", ["whiten", "jl"])
def test_dim_larger_than_the_model_is_a_clear_error(method, tiny_model_dir, fit_file, tmp_path):
    result = run("reduce", method, tiny_model_dir, "--fit", fit_file, "--dim", "64", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: --dim 64 is larger than the model's embedding dimension (32); reduction can only shrink vectors"
    assert not (tmp_path / "out").exists()


def test_auto_with_nothing_to_measure_is_a_clear_error(tiny_model_dir, tmp_path):
    result = run("reduce", "jl", tiny_model_dir, "--dim", "auto", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--dim auto needs something to measure against" in result.stderr
    assert run("reduce", "jl", tiny_model_dir, "--dim", "zero", "-o", tmp_path / "out").exit_code == 2


def test_whiten_needs_enough_fit_sentences(tiny_model_dir, tiny_corpus, tmp_path):
    result = run("reduce", "whiten", tiny_model_dir, "--fit", tiny_corpus, "--dim", "16", "-o", tmp_path / "out")
    assert result.exit_code == 1 and "spans only 11 dimensions" in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_sweep_prints_table_json_and_plot(tiny_model_dir, fit_file, sts_file, tmp_path):
    plot = tmp_path / "sweep.png"
    result = run("reduce", "sweep", tiny_model_dir, "--fit", fit_file, "--data", sts_file, "--seeds", "2", "--plot", plot)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["full", "128"] for line in lines)  # 32 dims × 4 bytes
    assert any(line.split()[:1] == ["32"] and "±" in line for line in lines)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(run("reduce", "sweep", tiny_model_dir, "--fit", fit_file, "--data", sts_file, "--seeds", "2", "--json").stdout)["rows"]
    # whitening stops at the fit's rank (31): there is no 32-dim whitening row
    assert [(r["method"], r["dim"]) for r in rows] == [("full", 32), ("jl", 32), ("whiten", 16), ("jl", 16), ("truncate", 16), ("whiten", 8), ("jl", 8), ("truncate", 8)]
    assert rows[0]["recall@10"]["mean"] == 1.0 and rows[1]["spearman"]["std"] > 0


def test_spearman_is_shown_times_100_and_other_measures_as_fractions():
    from embedder.dim_choice import Score, SweepRow, format_sweep, shown

    assert shown("spearman", 0.82034) == "82.03" and shown("recall@10", 0.5) == "0.5000"
    table = format_sweep([SweepRow("full", 32, {"spearman": Score(0.8203)}), SweepRow("whiten", 16, {"spearman": Score(0.81)})], 400)
    assert "whiten spearman ×100" in table.splitlines()[0] and "82.03" in table and "81.00" in table and "0.8203" not in table
