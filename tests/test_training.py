"""Training: each method lowers its loss on a tiny BERT, CoSENT's direction, persistence, input validation."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sentence_transformers import SentenceTransformer

from cli import main
from conftest import DATA, TINY_WORDS, crash_on_call, require
from embedder.pooling import make_pooling
from common.hashing import sha256_of
from embedder.training import TRAINING_JSON, TrainConfig, make_loss, mixed_precision, train
from embedder.training_data import cosent_pairs, read_training_data, sup_triplets, unsup_sentences
from embedder.training_methods import METHOD_DEFAULTS
from errors import DataError, UsageError


def tiny_sentence(rng: random.Random, length: int = 5) -> str:
    return " ".join(rng.choice(TINY_WORDS) for _ in range(length))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """Small training files in the tiny model's vocabulary, one per method."""
    root = tmp_path_factory.mktemp("train-data")
    rng = random.Random(0)
    pairs = ["s1\ts2\tscore"]
    for _ in range(96):
        words = tiny_sentence(rng).split()
        kept = rng.randint(0, 5)  # score = how many leading words the second sentence shares
        pairs.append(f"{' '.join(words)}\t{' '.join(words[:kept] + tiny_sentence(rng, 5 - kept).split())}\t{kept}")
    (root / "pairs.tsv").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    (root / "sentences.txt").write_text("\n".join(tiny_sentence(rng) for _ in range(64)) + "\n", encoding="utf-8")
    triplets = []
    for _ in range(64):
        words = tiny_sentence(rng).split()
        positive = words[:4] + [rng.choice(TINY_WORDS)]
        triplets.append("\t".join((" ".join(words), " ".join(positive), tiny_sentence(rng))))
    (root / "triplets.tsv").write_text("\n".join(triplets) + "\n", encoding="utf-8")
    return {"cosent": root / "pairs.tsv", "simcse-unsup": root / "sentences.txt", "simcse-sup": root / "triplets.tsv"}


def data_loss(model: SentenceTransformer, method: str, path: Path) -> float:
    """The method's loss over the whole training file as one batch, without dropout."""
    columns = read_training_data(method, path).columns
    loss = make_loss(method, model)
    model.eval()
    with torch.no_grad():
        features = [model.preprocess(columns[name]) for name in columns if name != "score"]
        labels = torch.tensor(columns["score"]) if "score" in columns else None
        return float(loss(features, labels))


def tiny_config(tmp_path: Path, tiny_model_dir: Path, method: str, train_file: Path, **overrides) -> TrainConfig:
    settings = {"base": str(tiny_model_dir), "epochs": 4, "batch_size": 8, "lr": 1e-3, "show_progress": False, **overrides}
    return TrainConfig(method, train_file, tmp_path / method, **settings)


# --- the loss -----------------------------------------------------------------------------------


def test_cosent_loss_prefers_cosines_ordered_like_the_labels(tiny_model):
    loss = make_loss("cosent", tiny_model)
    labels = torch.tensor([0.0, 0.5, 1.0])

    def pairs_with_cosines(cosines: list[float]) -> list[torch.Tensor]:
        angles = torch.acos(torch.tensor(cosines))
        a = torch.tensor([[1.0, 0.0]] * len(cosines))
        return [a, torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)]

    ordered = float(loss.compute_loss_from_embeddings(pairs_with_cosines([0.1, 0.5, 0.9]), labels))
    reversed_ = float(loss.compute_loss_from_embeddings(pairs_with_cosines([0.9, 0.5, 0.1]), labels))
    # log(1 + sum over label_i > label_j of exp(20 (cos_j - cos_i))), scale 20
    assert ordered == pytest.approx(math.log(1 + 2 * math.exp(-8) + math.exp(-16)), rel=1e-4)
    assert reversed_ == pytest.approx(math.log(1 + 2 * math.exp(8) + math.exp(16)), rel=1e-4)
    assert ordered < 0.001 < 16 < reversed_


# --- each method learns -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["cosent", "simcse-unsup", "simcse-sup"])
def test_training_lowers_the_training_loss(method, tmp_path, tiny_model_dir, tiny_data):
    before = data_loss(SentenceTransformer(str(tiny_model_dir), device="cpu"), method, tiny_data[method])
    result = train(tiny_config(tmp_path, tiny_model_dir, method, tiny_data[method]))
    after = data_loss(SentenceTransformer(str(result.output), device="cpu"), method, tiny_data[method])
    assert result.record["steps"] >= 24
    assert after < before * 0.9, (before, after)


def test_dev_curve_best_checkpoint_and_training_json(tmp_path, tiny_model_dir, tiny_data):
    config = tiny_config(tmp_path, tiny_model_dir, "cosent", tiny_data["cosent"], dev=tiny_data["cosent"], eval_steps=10, epochs=3)
    result = train(config)
    record = json.loads((result.output / TRAINING_JSON).read_text(encoding="utf-8"))
    assert record == json.loads(json.dumps(result.record))
    steps = [p["step"] for p in record["dev_curve"]]
    assert steps == [0, 10, 20, 30, 36]  # the base, every 10 steps, and the end (3 epochs of 12 batches)
    trained = {p["step"]: p["spearman"] for p in record["dev_curve"] if p["step"] > 0}
    assert record["best_step"] == max(trained, key=trained.get)
    assert record["final_dev_spearman"] == max(trained.values()) > record["base_dev_spearman"]
    # the saved model is the best checkpoint: scoring it again gives the recorded dev score
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    from eval import load_sts

    dev = load_sts(tiny_data["cosent"], "dev")
    again = EmbeddingSimilarityEvaluator(dev.sentences1, dev.sentences2, dev.scores.tolist(), batch_size=64, name="dev")(SentenceTransformer(str(result.output), device="cpu"))
    assert again["dev_spearman_cosine"] == pytest.approx(record["final_dev_spearman"], abs=1e-4)
    [train_set] = record["data"]["train"]
    assert train_set["sha256"] == sha256_of(tiny_data["cosent"]) and train_set["split"] == "train"
    assert train_set["rows"] == 96 and train_set["max_score"] == 5 and train_set["loss"] == "CoSENTLoss(scale=20)"
    assert {"epochs": 3, "batch_size": 8, "lr": 1e-3, "matryoshka_dims": None}.items() <= record["hyperparameters"].items()
    assert record["seed"] == 42 and record["versions"]["sentence-transformers"] and record["wall_time_s"] > 0
    assert not (result.output / "checkpoints").exists()


def test_same_seed_same_result(tmp_path, tiny_model_dir, tiny_data):
    first = train(tiny_config(tmp_path / "a", tiny_model_dir, "cosent", tiny_data["cosent"], dev=tiny_data["cosent"], epochs=1))
    second = train(tiny_config(tmp_path / "b", tiny_model_dir, "cosent", tiny_data["cosent"], dev=tiny_data["cosent"], epochs=1))
    other = train(tiny_config(tmp_path / "c", tiny_model_dir, "cosent", tiny_data["cosent"], dev=tiny_data["cosent"], epochs=1, seed=7))
    assert first.final_dev_spearman == pytest.approx(second.final_dev_spearman, abs=1e-4)
    texts = ["a man is playing guitar", "the dog sleeps"]
    np.testing.assert_allclose(first.model.encode(texts), second.model.encode(texts), atol=1e-6)
    assert not np.allclose(first.model.encode(texts), other.model.encode(texts), atol=1e-6)


# --- persistence and pooling --------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["first-last-avg", "cls"])
def test_saved_model_loads_with_plain_sentence_transformers_and_embeds_identically(pooling, tmp_path, tiny_model_dir, tiny_data):
    result = train(tiny_config(tmp_path, tiny_model_dir, "cosent", tiny_data["cosent"], epochs=1, pooling=pooling, max_seq_length=16))
    loaded = SentenceTransformer(str(result.output), device="cpu")
    texts = ["a man is playing guitar", "the cat runs in the park on a big green sofa", "stocks fell"]
    np.testing.assert_array_equal(loaded.encode(texts), result.model.encode(texts))
    assert loaded.max_seq_length == 16
    assert json.loads((result.output / TRAINING_JSON).read_text())["hyperparameters"]["pooling"] == pooling


def test_first_last_avg_is_the_mean_of_first_and_last_layer_token_means(tiny_model_dir):
    base = SentenceTransformer(str(tiny_model_dir), device="cpu")
    transformer = base[0]
    model = SentenceTransformer(modules=[transformer, *make_pooling("first-last-avg", transformer)], device="cpu")
    texts = ["a man is playing guitar", "the dog"]
    tokens = transformer.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = transformer.model(**tokens, output_hidden_states=True).hidden_states
    mask = tokens["attention_mask"].unsqueeze(-1).float()

    def masked_mean(layer: torch.Tensor) -> torch.Tensor:
        return (layer * mask).sum(1) / mask.sum(1)

    expected = (masked_mean(hidden[1]) + masked_mean(hidden[-1])) / 2  # hidden[0] is the embedding layer
    np.testing.assert_allclose(model.encode(texts), expected.numpy(), atol=1e-5)
    assert not np.allclose(model.encode(texts), masked_mean(hidden[-1]).numpy(), atol=1e-3)


def test_mixed_precision_only_on_cuda():
    assert mixed_precision() in ({"bf16", "fp16"} if torch.cuda.is_available() else {"fp32"})


# --- data adapters ------------------------------------------------------------------------------


def test_cosent_scores_are_normalized_by_max_score_or_the_data_max(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("a\tb\t4\nc\td\t2\ne\tf\t0\n", encoding="utf-8")
    assert cosent_pairs(path).columns["score"] == [1.0, 0.5, 0.0]
    assert cosent_pairs(path, max_score=5).columns["score"] == [0.8, 0.4, 0.0]
    path.write_text("s1,s2,score\na,b,1\nc,d,0\n", encoding="utf-8")
    assert cosent_pairs(path.rename(tmp_path / "p.csv")).columns == {"sentence1": ["a", "c"], "sentence2": ["b", "d"], "score": [1.0, 0.0]}


def test_stsb_train_split_only(tmp_path):
    data = cosent_pairs(require(DATA / "stsb-en" / "stsbenchmark.tsv.gz"))
    assert len(data) == 5749 and max(data.columns["score"]) == 1.0


def test_unsup_sentences_from_lines_or_both_columns_of_pairs(tmp_path):
    (tmp_path / "s.txt").write_text("one\n\ntwo\none\n", encoding="utf-8")
    assert unsup_sentences(tmp_path / "s.txt").columns == {"anchor": ["one", "two"], "positive": ["one", "two"]}
    (tmp_path / "p.tsv").write_text("a\tb\t1\nc\ta\t2\n", encoding="utf-8")
    assert unsup_sentences(tmp_path / "p.tsv").columns["anchor"] == ["a", "c", "b"]


def test_sup_triplets_from_jsonl_table_and_nli_pairs(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"query": "q", "pos": ["p1", "p2"], "neg": ["n1"]}\n', encoding="utf-8")
    assert sup_triplets(tmp_path / "t.jsonl").columns == {"anchor": ["q", "q"], "positive": ["p1", "p2"], "negative": ["n1", "n1"]}
    (tmp_path / "t.tsv").write_text("anchor\tpositive\tnegative\na\tp\tn\n", encoding="utf-8")
    assert sup_triplets(tmp_path / "t.tsv").columns == {"anchor": ["a"], "positive": ["p"], "negative": ["n"]}
    sick = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
    sick += "1\tA man plays\tA person plays\t4.5\tENTAILMENT\n2\tA man plays\tNobody plays\t1.5\tCONTRADICTION\n"
    sick += "3\tA dog runs\tA dog sits\t3\tNEUTRAL\n4\tA cat eats\tNo cat eats\t1\tCONTRADICTION\n5\tNo cat eats\tNo animal eats\t4\tENTAILMENT\n"
    (tmp_path / "sick.txt").write_text(sick, encoding="utf-8")
    data = sup_triplets(tmp_path / "sick.txt")
    # "No cat eats" gets its negative from line 4 read the other way round (contradiction is symmetric)
    assert data.columns == {"anchor": ["A man plays", "No cat eats"], "positive": ["A person plays", "No animal eats"], "negative": ["Nobody plays", "A cat eats"]}


def test_sick_train_gives_triplets():
    data = sup_triplets(require(DATA / "sick" / "SICK_train.txt"))
    assert 200 < len(data) < 1299 and data.stats["pairs"] == 4500


# --- bad input fails before training ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "name", "content", "message"),
    [
        ("cosent", "p.tsv", "s1\ts2\tscore\na\tb\t1\nc\td\thigh\n", "p.tsv:3: score 'high' is not a number"),
        ("cosent", "p.tsv", "s1\ts2\tscore\na\tb\t1\n\tc\t2\n", "p.tsv:3: empty sentence"),
        ("cosent", "p.tsv", "a\tb\t1\nc\td\t-1\n", "p.tsv:2: score -1 is outside [0, 1]"),
        ("cosent", "p.tsv", "a\tb\t1\nc\td\t1\n", "every pair has the same score"),
        ("simcse-sup", "t.jsonl", '{"query": "q", "pos": ["p"], "neg": ["n"]}\n{"query": "q", "pos": ["p"]}\n', "t.jsonl:2: field 'neg' must be"),
        ("simcse-sup", "t.tsv", "a\tp\tn\na\tp\n", "t.tsv:2: expected 3 non-empty fields"),
        ("simcse-sup", "n.tsv", "premise\thypothesis\tlabel\na\tb\tentails\n", "n.tsv:2: unknown label 'entails'"),
        ("simcse-unsup", "s.txt", "only one\n\n", "needs at least 2 distinct sentences"),
    ],
)
def test_bad_training_file_fails_before_any_model_is_loaded(method, name, content, message, tmp_path, monkeypatch):
    import embedder.training

    def no_model(config):
        raise AssertionError("the model was loaded before the data was validated")

    monkeypatch.setattr(embedder.training, "build_model", no_model)
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message.replace("[", r"\[")):
        train(TrainConfig(method, tmp_path / name, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_bad_dev_file_and_settings_fail_before_training(tmp_path, tiny_data, monkeypatch):
    import embedder.training

    monkeypatch.setattr(embedder.training, "build_model", lambda config: pytest.fail("model loaded"))
    (tmp_path / "dev.tsv").write_text("s1\ts2\tscore\na\tb\tx\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dev.tsv:2: score 'x'"):
        train(TrainConfig("cosent", tiny_data["cosent"], tmp_path / "out", dev=tmp_path / "dev.tsv"))
    with pytest.raises(UsageError, match="--max-score only applies to cosent"):
        train(TrainConfig("simcse-unsup", tiny_data["simcse-unsup"], tmp_path / "out", max_score=5))
    with pytest.raises(DataError, match=r"pairs.tsv:\d+: score 5 is outside \[0, 4\] \(--max-score\)"):
        train(TrainConfig("cosent", tiny_data["cosent"], tmp_path / "out", max_score=4))
    with pytest.raises(UsageError, match="--eval-steps needs --dev"):
        train(TrainConfig("cosent", tiny_data["cosent"], tmp_path / "out", eval_steps=5))


# --- command line -------------------------------------------------------------------------------


def test_cli_train_writes_a_model_folder_and_reports_bad_rows(tmp_path, tiny_model_dir, tiny_data):
    out = tmp_path / "model"
    args = ["train", "simcse-sup", "--train", str(tiny_data["simcse-sup"]), "--base", str(tiny_model_dir), "-o", str(out), "--batch-size", "16", "--lr", "1e-3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / TRAINING_JSON).read_text())
    assert (out / "modules.json").exists() and record["method"] == "simcse-sup"
    assert "Computing widget examples" not in result.stderr  # sentence-transformers' model-card bar: stderr carries our lines only
    assert "source_sentence:" in (out / "README.md").read_text()  # the model card still shows an example, from the first training rows
    # Options given win; the rest are the method's defaults, recorded as run.
    assert (record["hyperparameters"]["batch_size"], record["hyperparameters"]["lr"]) == (16, 1e-3)
    assert record["hyperparameters"]["epochs"] == METHOD_DEFAULTS["simcse-sup"].epochs
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "already exists" in again.stderr
    (tmp_path / "bad.tsv").write_text("a\tb\t1\nc\td\n", encoding="utf-8")
    bad = CliRunner().invoke(main, ["train", "cosent", "--train", str(tmp_path / "bad.tsv"), "-o", str(tmp_path / "m2")])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert bad.stderr.strip().splitlines()[-1] == f"Error: {tmp_path / 'bad.tsv'}:2: expected at least 3 fields, found 2"


# --- AnglE, several sets, Matryoshka (issue 16) -------------------------------------------------


def test_angle_loss_is_cosent_plus_angle_plus_in_batch_over_positive_pairs(tiny_model):
    from sentence_transformers.sentence_transformer.losses import AnglELoss, CoSENTLoss, MultipleNegativesRankingLoss

    from embedder.training_losses import IN_BATCH_POSITIVE

    first = ["a man is playing guitar", "the dog sleeps", "stocks fell today", "a red car is fast"]
    second = ["a man is playing piano", "the cat sleeps", "stocks rose today", "the blue train is slow"]
    labels = torch.tensor([0.9, 0.8, 0.5, 0.0])
    tiny_model.eval()
    with torch.no_grad():
        features = [tiny_model.preprocess(first), tiny_model.preprocess(second)]
        total = float(make_loss("angle", tiny_model)(features, labels))
        cosine = float(CoSENTLoss(tiny_model)(features, labels))
        angle = float(AnglELoss(tiny_model)(features, labels))
        positives = labels >= IN_BATCH_POSITIVE
        in_batch = float(MultipleNegativesRankingLoss(tiny_model)([tiny_model.preprocess(first[:2]), tiny_model.preprocess(second[:2])], None))
    assert positives.tolist() == [True, True, False, False]
    assert total == pytest.approx(cosine + angle + in_batch, rel=1e-5)
    assert min(cosine, angle, in_batch) > 0


def test_angle_trains_and_loads_with_plain_sentence_transformers(tmp_path, tiny_model_dir, tiny_data):
    before = data_loss(SentenceTransformer(str(tiny_model_dir), device="cpu"), "angle", tiny_data["cosent"])
    result = train(tiny_config(tmp_path, tiny_model_dir, "angle", tiny_data["cosent"]))
    loaded = SentenceTransformer(str(result.output), device="cpu")
    assert data_loss(loaded, "angle", tiny_data["cosent"]) < before * 0.9
    texts = ["a man is playing guitar", "stocks fell"]
    np.testing.assert_array_equal(loaded.encode(texts), result.model.encode(texts))
    [train_set] = result.record["data"]["train"]
    assert train_set["loss"] == "CoSENTLoss(scale=20) + AnglELoss(scale=20) + MultipleNegativesRankingLoss(scale=20) on pairs scored >= 0.8"
    assert result.record["hyperparameters"]["batch_sampler"] == "no_duplicates"


@pytest.mark.parametrize(("sampler", "steps_per_epoch"), [("proportional", 12 + 8), ("round-robin", 2 * 8)])
def test_several_sets_train_together_and_training_json_lists_each(sampler, steps_per_epoch, tmp_path, tiny_model_dir, tiny_data):
    sets = [str(tiny_data["cosent"]), f"{tiny_data['simcse-sup']}@simcse-sup"]
    result = train(tiny_config(tmp_path, tiny_model_dir, "cosent", sets, epochs=1, sampler=sampler))
    record = json.loads((result.output / TRAINING_JSON).read_text())
    assert [(s["method"], s["rows"], s["sha256"]) for s in record["data"]["train"]] == [
        ("cosent", 96, sha256_of(tiny_data["cosent"])),
        ("simcse-sup", 64, sha256_of(tiny_data["simcse-sup"])),
    ]
    assert [s["loss"] for s in record["data"]["train"]] == ["CoSENTLoss(scale=20)", "MultipleNegativesRankingLoss(scale=20)"]
    # proportional uses every batch of both sets (12 + 8); round-robin alternates until the smaller set (8 batches) runs out
    assert record["steps"] == steps_per_epoch and record["hyperparameters"]["multi_dataset_sampler"] == sampler
    assert SentenceTransformer(str(result.output), device="cpu").encode(["a dog"]).shape == (1, 32)


def test_train_specs_and_matryoshka_dims_are_checked_before_training(tmp_path, tiny_model_dir, tiny_data, monkeypatch):
    import embedder.training
    from embedder.training_data import TrainSet, parse_train_spec

    stsb = require(DATA / "stsb-en" / "stsbenchmark.tsv.gz")
    assert parse_train_spec(f"{stsb}:dev@angle", "cosent") == TrainSet(stsb, "angle", "dev")
    assert parse_train_spec(stsb, "cosent") == TrainSet(stsb, "cosent", "train")
    monkeypatch.setattr(embedder.training, "SentenceTransformerTrainer", lambda **kwargs: pytest.fail("training started"))
    for spec, message in [
        (f"{stsb}:test", "a test split is never trained on"),
        (f"{tiny_data['cosent']}@mnrl", "unknown method 'mnrl'"),
        (f"{tmp_path / 'missing.tsv'}@cosent", "missing.tsv: no such file"),
    ]:
        with pytest.raises(UsageError, match=message):
            train(TrainConfig("cosent", [str(tiny_data["cosent"]), spec], tmp_path / "out"))
    with pytest.raises(UsageError, match=r"--matryoshka 64 is larger than the base model's embedding dimension \(32\)"):
        train(tiny_config(tmp_path, tiny_model_dir, "cosent", tiny_data["cosent"], matryoshka=(64, 16)))
    assert not (tmp_path / "cosent").exists()


def test_matryoshka_model_truncates_to_its_trained_dims(tmp_path, tiny_model_dir, tiny_data):
    from common.sts_data import load_sts
    from embedder.training_runs import dev_score
    from embedder.model_files import REDUCTION_MARKER

    config = tiny_config(tmp_path, tiny_model_dir, "cosent", tiny_data["cosent"], dev=tiny_data["cosent"], epochs=2, matryoshka=(32, 16, 8))
    result = train(config)
    record = result.record
    assert record["hyperparameters"]["matryoshka_dims"] == [32, 16, 8]
    assert record["data"]["train"][0]["loss"] == "MatryoshkaLoss(CoSENTLoss(scale=20), dims=[32, 16, 8])"
    assert list(record["dev_by_dim"]) == ["32", "16", "8"]
    out = tmp_path / "m8"
    cli = CliRunner().invoke(main, ["reduce", "truncate", str(result.output), "--dim", "8", "-o", str(out)])
    assert cli.exit_code == 0, cli.output
    assert "trained with Matryoshka at [32, 16, 8]" in cli.stderr
    texts = ["a man is playing guitar", "the cat runs in the park", "stocks fell today"]
    cut = SentenceTransformer(str(out), device="cpu").encode(texts)
    full = result.model.encode(texts)
    expected = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    assert cut.shape == (3, 8)
    np.testing.assert_allclose(cut, expected, atol=1e-5)
    info = json.loads((out / REDUCTION_MARKER).read_text())
    assert (info["method"], info["input_dim"], info["output_dim"], info["matryoshka_dims"]) == ("truncate", 32, 8, [32, 16, 8])
    # the truncated model scores on dev what training recorded for dim 8
    dev = load_sts(tiny_data["cosent"], "dev")
    assert dev_score(SentenceTransformer(str(out), device="cpu"), dev) == pytest.approx(record["dev_by_dim"]["8"], abs=1e-4)


# --- several runs: seeds and soup, search -------------------------------------------------------


def test_average_weights_is_the_mean_of_each_weight(tiny_model_dir):
    from embedder.training_runs import average_weights

    models = [SentenceTransformer(str(tiny_model_dir), device="cpu") for _ in range(3)]
    for i, model in enumerate(models):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(i))
    soup = average_weights(models)
    for name, value in soup.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, models[1].state_dict()[name])  # (x + 0 + x + 1 + x + 2) / 3 = x + 1
    assert soup is not models[0] and not torch.equal(next(models[0].parameters()), next(soup.parameters()))


def test_seeds_with_average_keeps_the_soup_only_if_it_beats_every_run(tmp_path, tiny_model_dir, tiny_data):
    from common.sts_data import load_sts
    from embedder.training_runs import RunPlan, dev_score, run_plan
    from embedder.training_work import work_folder

    config = tiny_config(tmp_path, tiny_model_dir, "cosent", tiny_data["cosent"], dev=tiny_data["cosent"], epochs=1)
    result = run_plan(config, RunPlan(seeds=2, average=True))
    record = json.loads((result.output / TRAINING_JSON).read_text())
    runs, soup = record["runs"], record["soup"]
    assert [r["seed"] for r in runs] == [42, 43] and soup["seeds"] == [42, 43]
    best = max(r["dev_spearman"] for r in runs)
    assert soup["kept"] == (soup["dev_spearman"] > best)
    assert record["final_dev_spearman"] == max(best, soup["dev_spearman"])
    assert record["chosen"] == ("soup" if soup["kept"] else f"seed {max(runs, key=lambda r: r['dev_spearman'])['seed']}")
    saved = SentenceTransformer(str(result.output), device="cpu")
    assert dev_score(saved, load_sts(tiny_data["cosent"], "dev")) == pytest.approx(record["final_dev_spearman"], abs=1e-6)
    assert not work_folder(result.output).exists()


def test_resuming_seeds_over_a_truncated_run_trains_that_run_again(tmp_path, tiny_model_dir, tiny_data, monkeypatch):
    import embedder.training_runs as runs
    from embedder.training_runs import RunPlan, run_plan
    from embedder.training_work import work_folder

    config = tiny_config(tmp_path, tiny_model_dir, "cosent", tiny_data["cosent"], dev=tiny_data["cosent"], epochs=1)
    crash_on_call(monkeypatch, runs, "train", 2, KeyboardInterrupt())  # killed while training seed 43
    with pytest.raises(KeyboardInterrupt):
        run_plan(config, RunPlan(seeds=2))
    monkeypatch.undo()
    weights = work_folder(config.output) / "seed-42" / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)  # seed 42's save was cut short
    trained = crash_on_call(monkeypatch, runs, "train", 0)  # counts calls, never raises
    result = run_plan(config, RunPlan(seeds=2))
    assert trained["n"] == 2  # seed 42 again (damaged), then seed 43
    assert [r["seed"] for r in json.loads((result.output / TRAINING_JSON).read_text())["runs"]] == [42, 43]


def test_a_folder_in_the_place_of_the_work_folder_is_refused_and_kept(tmp_path, tiny_model_dir, tiny_data):
    from embedder.training_runs import RunPlan, run_plan
    from embedder.training_work import work_folder

    config = tiny_config(tmp_path, tiny_model_dir, "cosent", tiny_data["cosent"], dev=tiny_data["cosent"], epochs=1)
    work_folder(config.output).mkdir()
    (work_folder(config.output) / "keep.txt").write_text("mine\n", encoding="utf-8")
    with pytest.raises(UsageError, match="is in the way of the runs of .* and was not made by simsearch"):
        run_plan(config, RunPlan(seeds=2))
    assert (work_folder(config.output) / "keep.txt").read_text(encoding="utf-8") == "mine\n" and not config.output.exists()


@pytest.fixture
def split_file(tmp_path) -> Path:
    """An s1/s2/score/split file whose test rows all end in '?' (no train or dev row does)."""
    rng = random.Random(1)
    lines = ["s1	s2	score	split"]
    for split, n in (("train", 48), ("dev", 24), ("test", 24)):
        for _ in range(n):
            words = tiny_sentence(rng).split()
            kept = rng.randint(0, 5)
            mark = " ?" if split == "test" else ""
            lines.append(f"{' '.join(words)}{mark}	{' '.join(words[:kept] + tiny_sentence(rng, 5 - kept).split())}{mark}	{kept}	{split}")
    path = tmp_path / "sts.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_search_picks_by_dev_never_reads_test_and_resumes(tmp_path, tiny_model_dir, split_file, monkeypatch):
    import common.sts_data
    import embedder.training
    import embedder.training_runs
    from conftest import crash_on_call
    from embedder.training_runs import RunPlan, run_plan
    from embedder.training_work import work_folder

    splits_read, texts_seen = [], set()
    real_load, real_datasets = common.sts_data.load_sts, embedder.training.training_datasets

    def spy_load(path, split="test", columns=None):
        splits_read.append(split)
        return real_load(path, split, columns)

    def spy_datasets(names, data):
        for d in data:
            texts_seen.update(t for name, column in d.columns.items() if name != "score" for t in column)
        return real_datasets(names, data)

    for module in ("common.sts_data", "embedder.training", "embedder.training_data"):
        monkeypatch.setattr(f"{module}.load_sts", spy_load)
    monkeypatch.setattr(embedder.training, "training_datasets", spy_datasets)
    config = tiny_config(tmp_path, tiny_model_dir, "cosent", split_file, dev=split_file, epochs=1)
    plan = RunPlan(search="lr=1e-4,3e-3,1e-6 batch=8", trials=None)
    calls = crash_on_call(monkeypatch, embedder.training_runs, "train", 3)  # dies in the third trial
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_plan(config, plan)
    assert len((work_folder(config.output) / "results.jsonl").read_text().splitlines()) == 2 and not config.output.exists()
    result = run_plan(config, plan)
    assert calls["n"] == 4  # the rerun trained only the unfinished trial
    trials = result.record["search"]["trials"]
    assert [t["trial"] for t in trials] == ["lr=0.0001 batch_size=8", "lr=0.003 batch_size=8", "lr=1e-06 batch_size=8"]
    best = max(trials, key=lambda t: t["dev_spearman"])
    assert result.record["search"]["chosen"] == best["trial"] and result.record["final_dev_spearman"] == best["dev_spearman"]
    assert result.record["hyperparameters"]["lr"] == best["settings"]["lr"]
    assert len({t["dev_spearman"] for t in trials}) == 3
    # the trainer saw only train rows, the selection only dev rows; nothing read the test split
    assert texts_seen and not any(t.endswith("?") for t in texts_seen)
    assert set(splits_read) == {"train", "dev"}
    assert not work_folder(config.output).exists()


def test_run_plans_that_cannot_work_fail_before_training(tmp_path, tiny_data):
    from embedder.training_runs import RunPlan, parse_grid, run_plan

    config = TrainConfig("cosent", tiny_data["cosent"], tmp_path / "out")
    for plan, message in [
        (RunPlan(seeds=2), "--seeds needs --dev"),
        (RunPlan(search="lr=1e-5"), "--search needs --dev"),
        (RunPlan(average=True), "--average needs --seeds 2 or more"),
        (RunPlan(trials=2), "--trials needs --search"),
        (RunPlan(seeds=2, search="lr=1e-5"), "cannot be combined"),
    ]:
        with pytest.raises(UsageError, match=message):
            run_plan(config, plan)
    assert parse_grid("lr=1e-5,3e-5 epochs=2,4") == [
        {"lr": 1e-5, "epochs": 2}, {"lr": 1e-5, "epochs": 4}, {"lr": 3e-5, "epochs": 2}, {"lr": 3e-5, "epochs": 4}
    ]
    for spec, message in [("lr=fast", "'fast' is not a float"), ("depth=3", "unknown setting 'depth'"), ("lr", "expected KEY=V1,V2"), ("epochs=0", "--epochs must be at least 1")]:
        with pytest.raises(UsageError, match=message):
            run_plan(replace_dev(config, tiny_data), RunPlan(search=spec))


def replace_dev(config: TrainConfig, tiny_data) -> TrainConfig:
    from dataclasses import replace

    return replace(config, dev=tiny_data["cosent"])
