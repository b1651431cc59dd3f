"""STS loading and scoring, checked against sentence-transformers' own evaluator."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli import main
from conftest import DATA, STSB_EN, require
from errors import DataError
from eval import evaluate_sts, load_sts


@pytest.mark.parametrize(
    ("relative", "split", "pairs"),
    [
        ("stsb-en/stsbenchmark.tsv.gz", "train", 5749),
        ("stsb-en/stsbenchmark.tsv.gz", "dev", 1500),
        ("stsb-en/stsbenchmark.tsv.gz", "test", 1379),
        ("stsb-zh/STS-B.test.data", "test", 1361),
        ("sick/SICK_trial.txt", "test", 500),
    ],
)
def test_shared_data_sets_load_with_their_documented_sizes(relative, split, pairs):
    data = load_sts(require(DATA / relative), split)
    assert len(data) == len(data.sentences1) == len(data.sentences2) == pairs
    assert data.scores.min() >= 0 and data.scores.max() <= 5
    assert all(s.strip() for s in data.sentences1 + data.sentences2)


def test_generic_csv_and_headerless_tsv(tmp_path):
    (tmp_path / "p.csv").write_text('s1,s2,score\n"a, b",c,1.5\nd,e,"2"\n', encoding="utf-8")
    data = load_sts(tmp_path / "p.csv")
    assert (data.sentences1, data.sentences2, data.scores.tolist()) == (["a, b", "d"], ["c", "e"], [1.5, 2.0])
    (tmp_path / "p.tsv").write_text("x\ty\t5.000\nu\tv\t0\n", encoding="utf-8")
    assert load_sts(tmp_path / "p.tsv").scores.tolist() == [5.0, 0.0]


def test_a_bad_score_names_file_and_line(tmp_path):
    (tmp_path / "p.tsv").write_text("s1\ts2\tscore\na\tb\t1\nc\td\thigh\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"p.tsv:3: score 'high' is not a number"):
        load_sts(tmp_path / "p.tsv")


@pytest.mark.slow
def test_cli_spearman_on_stsb_test_matches_sentence_transformers_evaluator(default_model):
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    path = require(STSB_EN)
    result = CliRunner().invoke(main, ["eval", "sts", "--data", str(path), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    ours = json.loads(result.stdout)
    assert ours["n"] == 1379 and ours["data"] == str(path) and ours["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert ours["spearman"] >= 0.815
    data = load_sts(path, "test")
    reference = EmbeddingSimilarityEvaluator(data.sentences1, data.sentences2, data.scores.tolist(), batch_size=64)(default_model)
    spearman = next(v for k, v in reference.items() if k.endswith("spearman_cosine"))
    pearson = next(v for k, v in reference.items() if k.endswith("pearson_cosine"))
    assert ours["spearman"] == pytest.approx(spearman, abs=0.002)
    assert ours["pearson"] == pytest.approx(pearson, abs=0.002)
    assert evaluate_sts(default_model, data).spearman == pytest.approx(ours["spearman"], abs=1e-6)
