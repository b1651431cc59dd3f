"""Cross-encoders: `train rerank` on a tiny BERT (its folder loads with plain CrossEncoder), and `eval sts --model` scoring pairs with one."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import spearmanr
from sentence_transformers.cross_encoder import CrossEncoder

from cli import main
from common.measures import sts_correlations
from common.sts_data import load_sts
from conftest import TINY_WORDS, crash_on_call
from embedder.rerank_training import train_reranker
from embedder.training import TRAINING_JSON, TrainConfig
from errors import UsageError
from index.fusion import SearchOptions


def config(tmp_path: Path, base: Path, pairs: Path, **overrides) -> TrainConfig:
    settings = {"base": str(base), "dev": pairs, "epochs": 6, "batch_size": 8, "lr": 1e-2, "show_progress": False, **overrides}
    return TrainConfig("rerank", pairs, tmp_path / "reranker", **settings)


def test_a_cross_encoder_from_a_bi_encoder_learns_the_pairs_and_loads_with_plain_cross_encoder(tmp_path, tiny_model_dir, pairs):
    result = train_reranker(config(tmp_path, tiny_model_dir, pairs))
    record = json.loads((result.output / TRAINING_JSON).read_text(encoding="utf-8"))
    losses = [entry["loss"] for entry in record["train_loss"]]
    assert record["steps"] == 72 and losses[-1] < losses[0] * 0.95, losses
    trained = {p["step"]: p["spearman"] for p in record["dev_curve"] if p["step"] > 0}
    assert record["best_step"] == max(trained, key=trained.get) and record["final_dev_spearman"] == max(trained.values()) > record["base_dev_spearman"] + 0.3
    assert (record["method"], record["kind"], record["hyperparameters"]["loss"]) == ("rerank", "cross-encoder", "bce")
    assert record["data"]["train"][0]["rows"] == 96 and record["data"]["train"][0]["max_score"] == 5
    assert not (result.output / "checkpoints").exists()
    plain = CrossEncoder(str(result.output))  # no simsearch code: the folder is a plain cross-encoder with one label
    texts = [("alpha beta gamma delta epsilon", "alpha beta gamma delta epsilon"), ("alpha beta gamma delta epsilon", "zeta eta theta iota kappa")]
    assert plain.predict(texts).tolist() == pytest.approx(result.model.predict(texts).tolist(), abs=1e-5)
    # a cross-encoder folder is trained further as it is (its head kept)
    again = train_reranker(config(tmp_path / "more", result.output, pairs, epochs=1, dev=None, loss="mse"))
    assert again.record["hyperparameters"]["loss"] == "mse" and again.record["base"] == str(result.output)


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_trains_a_reranker_and_refuses_the_encoder_options(tmp_path, tiny_model_dir, pairs):
    done = run("train", "rerank", "--train", pairs, "--base", tiny_model_dir, "-o", tmp_path / "r", "--epochs", "1", "--batch-size", "16")
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "r" / TRAINING_JSON).read_text(encoding="utf-8"))["steps"] == 6
    for extra, message in [
        (["--pooling", "mean"], "--pooling: not an option of train rerank"),
        (["--seeds", "2", "--dev", pairs], "--seeds, --average, --search and --trials are not options of train rerank"),
        (["--loss", "hinge"], "'hinge' is not one of 'bce', 'mse'"),
    ]:
        bad = run("train", "rerank", "--train", pairs, "--base", tiny_model_dir, "-o", tmp_path / "bad", *extra)
        assert bad.exit_code == 2 and message in bad.output and not (tmp_path / "bad").exists(), bad.output
    for extra, message in [(["--loss", "mse"], "--loss applies to train rerank"), (["--resume"], "--resume applies to train rerank")]:
        wrong = run("train", "cosent", "--train", pairs, "--base", tiny_model_dir, "-o", tmp_path / "bad", *extra)
        assert wrong.exit_code == 2 and message in wrong.output


def test_an_interrupted_training_resumes_from_its_last_checkpoint_and_ends_as_an_uninterrupted_one(tmp_path, tiny_model_dir, pairs, monkeypatch):
    from embedder.training import DevCurve
    from embedder.training_work import work_folder

    whole = train_reranker(config(tmp_path / "whole", tiny_model_dir, pairs, epochs=3))
    cut = config(tmp_path / "cut", tiny_model_dir, pairs, epochs=3)
    crash_on_call(monkeypatch, DevCurve, "on_evaluate", 3, KeyboardInterrupt())  # Ctrl-C at the second epoch's dev evaluation
    with pytest.raises(KeyboardInterrupt):
        train_reranker(cut)
    monkeypatch.undo()
    checkpoints = work_folder(cut.output) / "checkpoints"
    assert not cut.output.exists() and [p.name for p in checkpoints.glob("checkpoint-*")] == ["checkpoint-12"]  # the first epoch's
    resumed = train_reranker(replace(cut, resume=True))
    assert resumed.record["resumed_from_step"] == 12 and whole.record["resumed_from_step"] is None
    assert [p["step"] for p in resumed.record["dev_curve"]] == [p["step"] for p in whole.record["dev_curve"]] == [0, 12, 24, 36]
    assert [p["spearman"] for p in resumed.record["dev_curve"]] == pytest.approx([p["spearman"] for p in whole.record["dev_curve"]], abs=1e-6)
    texts = [("alpha beta gamma", "alpha beta delta"), ("alpha beta gamma", "zeta eta theta")]
    assert resumed.model.predict(texts).tolist() == pytest.approx(whole.model.predict(texts).tolist(), abs=1e-5)
    assert not work_folder(cut.output).exists()
    again = train_reranker(replace(cut, overwrite=True, epochs=1, dev=None, resume=True))  # nothing to resume: trains from the start
    assert again.record["resumed_from_step"] is None and again.record["steps"] == 12


def test_bad_pairs_fail_before_any_model_is_loaded(tmp_path, pairs):
    broken = tmp_path / "broken.tsv"
    broken.write_text("s1\ts2\tscore\na b\tc d\t3\ne f\t\t2\n", encoding="utf-8")
    done = run("train", "rerank", "--train", broken, "--base", tmp_path / "no-such-model", "-o", tmp_path / "r")
    assert done.exit_code == 1 and f"{broken}:3: empty sentence" in done.output
    with pytest.raises(UsageError, match="one --train FILE"):
        train_reranker(TrainConfig("rerank", [pairs, pairs], tmp_path / "r"))


def test_the_same_seed_trains_the_same_reranker(tmp_path, tiny_model_dir, pairs):
    """The new head is drawn from --seed too, so two runs agree to the last digit."""
    first, second = (train_reranker(config(tmp_path / name, tiny_model_dir, pairs, epochs=1, dev=None)) for name in ("a", "b"))
    texts = [("alpha beta gamma", "alpha beta delta"), ("alpha beta gamma", "zeta eta theta")]
    assert first.model.predict(texts).tolist() == second.model.predict(texts).tolist()


def test_eval_sts_scores_each_pair_with_a_cross_encoder_and_says_so(reranker, pairs, tiny_model_dir):

    done = run("eval", "sts", "--data", pairs, "--model", reranker, "--json")
    assert done.exit_code == 0, done.output
    line = json.loads(done.stdout)
    data = load_sts(pairs, "test")
    expected = sts_correlations(CrossEncoder(str(reranker)).predict(list(zip(data.sentences1, data.sentences2))), data.scores)
    assert line["kind"] == "cross-encoder" and line["spearman"] == pytest.approx(expected.spearman, abs=1e-6) and line["n"] == 96
    encoder = json.loads(run("eval", "sts", "--data", pairs, "--model", tiny_model_dir, "--json").stdout)
    assert encoder["kind"] == "bi-encoder" and set(encoder) == set(line)  # one shape for both kinds
    assert "(cross-encoder)" in run("eval", "sts", "--data", pairs, "--model", reranker).stdout


def test_a_cross_encoder_is_no_sentence_encoder_and_the_reverse(reranker, tiny_model_dir, tmp_path):
    from embedder.reranking import load_reranker

    corpus = tmp_path / "c.txt"
    corpus.write_text("alpha beta\ngamma delta\n", encoding="utf-8")
    built = run("index", "build", corpus, "-o", tmp_path / "idx", "--model", reranker)
    assert built.exit_code == 2 and built.stderr.strip() == (
        f"Error: {reranker}: a cross-encoder (a re-ranker) scores pairs and gives no sentence vectors; `eval sts --model` takes it"
    )
    with pytest.raises(UsageError, match="not a cross-encoder .* make one with `simsearch train rerank`"):
        load_reranker(str(tiny_model_dir))
    with pytest.raises(UsageError, match="unknown backend 'onnx-fp16'"):
        load_reranker(str(reranker), "onnx-fp16")


class WordOverlap:
    """A stand-in cross-encoder for the ordering logic: a pair scores the share of the query's words the text holds."""

    name = "word-overlap"

    def describe(self) -> dict:
        return {"model": self.name, "kind": "cross-encoder"}

    def score_pairs(self, pairs, batch_size: int = 32) -> np.ndarray:
        return np.array([len(set(q.split()) & set(t.split())) / len(set(q.split())) for q, t in pairs], dtype=np.float32)


def test_reranking_reorders_the_top_hits_and_keeps_the_rest_behind_them():
    from index.search import Hit, rerank

    first_stage = [Hit(1, 0.9, "red car fast"), Hit(2, 0.8, "red car on the road"), Hit(3, 0.7, "on the road"), Hit(4, 0.6, "red car on the road today")]
    reranked, again = rerank(["red car on the road", "car"], [first_stage, first_stage[:2]], WordOverlap(), top=3)
    assert [h.id for h in again] == [1, 2] and [h.rerank_score for h in again] == [1.0, 1.0]  # a tie keeps the first-stage order
    assert [h.id for h in reranked] == [2, 3, 1, 4]  # the relevant text the first stage put second is first; hit 4 was not re-scored
    assert [h.rerank_score for h in reranked[:3]] == pytest.approx([1.0, 0.6, 0.4]) and reranked[3].rerank_score is None
    assert [h.score for h in reranked] == [0.8, 0.7, 0.9, 0.6]  # the first stage's scores are kept
    assert reranked[3].to_json() == {"id": 4, "score": 0.6, "text": "red car on the road today"}
    assert reranked[0].to_json()["rerank_score"] == 1.0


def test_a_rerank_weight_below_one_blends_the_cross_encoder_with_the_first_stage():
    from index.search import Hit, reorder

    first_stage = [Hit(1, 0.9, "a"), Hit(2, 0.8, "b"), Hit(3, 0.7, "c"), Hit(4, 0.1, "d")]
    scores = [0.0, 1.0, 0.6]  # min-max: first stage 1, .5, 0; cross-encoder 0, 1, .6
    assert [h.id for h in reorder([first_stage], scores, 3)[0]] == [2, 3, 1, 4]
    assert [h.id for h in reorder([first_stage], scores, 3, weight=0.5)[0]] == [2, 1, 3, 4]  # .75, .5, .3
    kept = reorder([first_stage], scores, 3, weight=0.0)[0]
    assert [h.id for h in kept] == [1, 2, 3, 4] and [h.rerank_score for h in kept] == [0.0, 1.0, 0.6, None]
    with pytest.raises(UsageError, match="rerank_weight 1.5 is outside"):
        SearchOptions(rerank_weight=1.5)


def test_query_and_eval_retrieval_rerank_with_a_trained_cross_encoder(reranker, tiny_model_dir, tmp_path):
    rng = random.Random(1)
    texts = [" ".join(rng.choice(TINY_WORDS) for _ in range(5)) for _ in range(40)]
    (tmp_path / "c.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert run("index", "build", tmp_path / "c.txt", "-o", tmp_path / "idx", "--model", tiny_model_dir).exit_code == 0
    query = texts[7]
    done = run("query", tmp_path / "idx", query, "-k", "5", "--rerank", reranker, "--rerank-top", "10", "--json", "--mode", "dense")
    assert done.exit_code == 0, done.output
    hits = json.loads(done.stdout)["hits"]
    scores = [h["rerank_score"] for h in hits]
    assert len(hits) == 5 and scores == sorted(scores, reverse=True)
    expected = CrossEncoder(str(reranker)).predict([(query, h["text"]) for h in hits]).tolist()
    assert scores == pytest.approx(expected, abs=1e-5)
    on_onnx = run("query", tmp_path / "idx", query, "-k", "5", "--rerank", reranker, "--rerank-top", "10", "--json", "--mode", "dense", "--rerank-backend", "onnx")
    assert json.loads(on_onnx.stdout)["hits"] == [{**h, "rerank_score": pytest.approx(h["rerank_score"], abs=1e-5)} for h in hits], on_onnx.output
    (tmp_path / "q.tsv").write_text(f"qid\ttext\nq1\t{query}\n", encoding="utf-8")
    (tmp_path / "qrels.tsv").write_text("q1\t7\t1\n", encoding="utf-8")
    evaluated = run("eval", "retrieval", tmp_path / "idx", "--queries", tmp_path / "q.tsv", "--qrels", tmp_path / "qrels.tsv", "--json", "--rerank", reranker)
    assert evaluated.exit_code == 0 and json.loads(evaluated.stdout)["mode"] == "hybrid-weighted-0.7+rerank@50", evaluated.output
    blended = run("eval", "retrieval", tmp_path / "idx", "--queries", tmp_path / "q.tsv", "--qrels", tmp_path / "qrels.tsv", "--json", "--rerank", reranker,
                  "--rerank-weight", "0.5")
    assert blended.exit_code == 0 and json.loads(blended.stdout)["mode"] == "hybrid-weighted-0.7+rerank@50-w0.5", blended.output
    for extra, code, message in [(["--rerank-top", "0"], 2, "0 is not in the range x>=1"), (["--rerank-weight", "1.5"], 2, "1.5 is not in the range 0.0<=x<=1.0"),
                                 ([], 2, "not a cross-encoder")]:
        bad = run("query", tmp_path / "idx", query, "--rerank", tiny_model_dir if not extra else reranker, *extra)
        assert bad.exit_code == code and message in bad.output, bad.output


def test_the_onnx_backends_score_pairs_as_the_torch_cross_encoder_alone_or_batched(reranker, pairs, tmp_path):
    from embedder.reranking import load_reranker

    folder = tmp_path / "r"  # a copy: the export is cached inside the folder
    shutil.copytree(reranker, folder)
    data = load_sts(pairs, "test")
    long_text = " ".join(random.Random(2).choice(TINY_WORDS) for _ in range(400))  # past the model's maximum length: truncated as torch does
    scored = [*zip(data.sentences1, data.sentences2), (long_text, data.sentences2[0]), (data.sentences1[0], long_text)]
    want = CrossEncoder(str(folder)).predict(scored)
    fp32 = load_reranker(str(folder), "onnx")
    assert fp32.describe()["backend"] == "onnx" and (folder / "onnx" / "model.onnx").is_file()
    assert fp32.score_pairs(scored, batch_size=7) == pytest.approx(want, abs=1e-5)
    int8 = load_reranker(str(folder), "onnx-int8")
    batched = int8.score_pairs(scored, batch_size=7)
    assert np.abs(batched - want).max() < 0.05 and spearmanr(batched, want)[0] > 0.98
    alone = np.concatenate([int8.score_pairs([pair], batch_size=1) for pair in scored[:10]])
    assert alone == pytest.approx(batched[:10], abs=1e-6)  # per-token int8 scales: a pair's score never depends on its batch
    assert int8.score_pairs([]).shape == (0,)
    line = json.loads(run("eval", "sts", "--data", pairs, "--model", folder, "--backend", "onnx", "--json").stdout)
    assert line["kind"] == "cross-encoder" and line["spearman"] == pytest.approx(sts_correlations(want[:-2], data.scores).spearman, abs=1e-4)
