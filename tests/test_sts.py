"""STS loading and scoring, checked against sentence-transformers' own evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from conftest import DATA, STSB_EN, require
from common.corpus import CorpusSpec, read_corpus
from embedder.training_data import sup_triplets
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


@pytest.mark.parametrize("read", [load_sts, lambda p: list(read_corpus(CorpusSpec(p, text_column="s1"))), sup_triplets], ids=["sts", "corpus", "training"])
def test_a_carriage_return_inside_a_csv_field_names_file_and_line(tmp_path, read):
    """Found by the property test (content b'\\r\\x00'): csv's own error used to escape as a traceback."""
    (tmp_path / "p.csv").write_bytes(b"s1,s2,score\na,b,1\nc\rx,d,2\n")
    with pytest.raises(DataError, match=r"p.csv:3: not valid CSV"):
        read(tmp_path / "p.csv")


@pytest.mark.slow
def test_cli_spearman_on_stsb_test_matches_sentence_transformers_evaluator(default_model, default_encoder):
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

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
    assert evaluate_sts(default_encoder, data).spearman == pytest.approx(ours["spearman"], abs=1e-6)


def test_data_argument_takes_an_optional_split(tmp_path):
    from eval import parse_data_arg

    assert parse_data_arg("a/b.tsv.gz:dev", "test") == (Path("a/b.tsv.gz"), "dev")
    assert parse_data_arg("a/b.tsv.gz", "test") == (Path("a/b.tsv.gz"), "test")
    odd = tmp_path / "x:y"
    odd.write_text("s1\ts2\tscore\n")
    assert parse_data_arg(str(odd), "test") == (odd, "test")  # an existing file name with ':' wins


def test_several_sets_give_one_row_each_and_a_mean(tmp_path, tiny_model_dir):
    pairs = [("a man is playing guitar", "a man is playing piano", 4), ("the dog sleeps", "stocks fell today", 0),
             ("a red car", "a blue car", 3), ("rain in the city", "sun in the park", 1), ("the cat runs", "the dog runs", 2)]
    (tmp_path / "mine.csv").write_text("left,right,gold\n" + "".join(f"{a},{b},{g}\n" for a, b, g in pairs))
    (tmp_path / "other.jsonl").write_text("".join(json.dumps({"left": b, "right": a, "gold": 5 - g}) + "\n" for a, b, g in pairs))
    args = ["eval", "sts", "--data", str(tmp_path / "mine.csv"), "--data", str(tmp_path / "other.jsonl"),
            "--columns", "left,right,gold", "--model", str(tiny_model_dir)]
    lines = [json.loads(x) for x in CliRunner().invoke(main, [*args, "--json", "--plot", str(tmp_path / "p.png")]).stdout.splitlines()]
    assert [x["data"] for x in lines] == [str(tmp_path / "mine.csv"), str(tmp_path / "other.jsonl"), "mean"]
    assert lines[0]["spearman"] == pytest.approx(-lines[1]["spearman"])  # same pairs, gold reversed
    assert lines[2]["spearman"] == pytest.approx((lines[0]["spearman"] + lines[1]["spearman"]) / 2)
    assert lines[2]["n"] == 10
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_out = CliRunner().invoke(main, [*args, "--csv"]).stdout.splitlines()
    assert csv_out[0] == "data,spearman,pearson,pairs" and csv_out[-1].startswith("mean,") and len(csv_out) == 4


def test_columns_must_name_three_fields(tmp_path):
    (tmp_path / "p.csv").write_text("a,b,c\nx,y,1\n")
    result = CliRunner().invoke(main, ["eval", "sts", "--data", str(tmp_path / "p.csv"), "--columns", "a,b"])
    assert result.exit_code == 2 and "--columns needs three names" in result.stderr
