"""Retrieval metrics: a toy case worked out by hand, through the real index and command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from conftest import DATA, require
from eval.retrieval import score_run
from eval.retrieval_data import load_qrels, load_queries
from eval.stsb_retrieval import build_stsb_retrieval

# Word vectors on the unit circle: a one-word text embeds at its word's angle, so the
# cosine between texts is cos(angle difference) and every ranking is known in advance.
DOC_ANGLES = {"one": 0, "two": 30, "three": 70, "four": 120, "five": 180}
QUERY_ANGLES = {"north": 5, "east": 100, "south": 160}


@pytest.fixture(scope="module")
def angle_model_dir(tmp_path_factory) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import StaticEmbedding
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", *DOC_ANGLES, *QUERY_ANGLES]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    angles = np.radians([0, *DOC_ANGLES.values(), *QUERY_ANGLES.values()])
    weights = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    weights[0] = 0
    out = tmp_path_factory.mktemp("angle") / "model"
    SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_weights=weights)], device="cpu").save(str(out))
    return out


def test_three_query_toy_case_matches_metrics_worked_out_by_hand(tmp_path, angle_model_dir):
    # Rankings by angular distance:   north(5°): one two three four five
    #                                  east(100°): four three two five one
    #                                 south(160°): five four three two one
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"id": i, "text": w}) + "\n" for i, w in enumerate(DOC_ANGLES, 1)))
    (tmp_path / "queries.tsv").write_text("qid\ttext\nqa\tnorth\nqb\teast\nqc\tsouth\n")
    # qa: doc two (rank 2); qb: three (rank 2) and five (rank 4); qc: five (rank 1). TREC format.
    (tmp_path / "qrels.txt").write_text("qa 0 2 1\nqb 0 3 1\nqb 0 5 1\nqc 0 5 1\n")
    runner = CliRunner()
    built = runner.invoke(main, ["index", "build", str(tmp_path / "corpus.jsonl"), "-o", str(tmp_path / "idx"), "--model", str(angle_model_dir)])
    assert built.exit_code == 0, built.output
    result = runner.invoke(main, ["eval", "retrieval", str(tmp_path / "idx"), "--queries", str(tmp_path / "queries.tsv"),
                                  "--qrels", str(tmp_path / "qrels.txt"), "--k", "1,3,5", "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    d2, d4 = 1 / math.log2(3), 1 / math.log2(5)  # DCG gains at ranks 2 and 4
    expected = {
        "recall@1": (0 + 0 + 1) / 3,
        "recall@3": (1 + 0.5 + 1) / 3,
        "recall@5": 1.0,
        "mrr@10": (1 / 2 + 1 / 2 + 1) / 3,
        "ndcg@10": (d2 / 1 + (d2 + d4) / (1 + d2) + 1) / 3,
        "map@100": (1 / 2 + (1 / 2 + 2 / 4) / 2 + 1) / 3,
    }
    assert got["queries"] == 3
    assert {k: got[k] for k in expected} == pytest.approx(expected, abs=1e-4)


def test_mrr_counts_only_the_first_ten_and_missing_queries_score_zero():
    qrels = {"a": {"x": 1}, "b": {"y": 1}}
    run = {"a": {f"d{i}": 1 - i / 100 for i in range(11)} | {"x": 0.5}, "b": {}}
    result = score_run(run, qrels, ks=(10,))
    assert result.metrics["mrr@10"] == 0.0 and result.metrics["recall@10"] == 0.0 and result.queries == 2


def test_query_and_qrels_files_report_bad_lines(tmp_path):
    from errors import DataError

    (tmp_path / "q.tsv").write_text("q1\tfine\nq2 no tab\n")
    with pytest.raises(DataError, match=r"q.tsv:2: expected qid<TAB>text"):
        load_queries(tmp_path / "q.tsv")
    (tmp_path / "r.tsv").write_text("q1\t7\t1\nq2\t8\tvery\n")
    with pytest.raises(DataError, match=r"r.tsv:2: relevance 'very' is not a number"):
        load_qrels(tmp_path / "r.tsv")


def test_stsb_retrieval_set_is_built_from_the_shared_data(tmp_path):
    require(DATA / "stsb-en" / "stsbenchmark.tsv.gz")
    data = build_stsb_retrieval(DATA)
    assert len(data.corpus) > 15_000 and len(data.queries) > 200
    texts = set(data.corpus.values())
    assert len(texts) == len(data.corpus)  # distinct sentences
    assert all(docs and all(d in data.corpus for d in docs) for docs in data.qrels.values())
    relevant_texts = {data.corpus[d] for docs in data.qrels.values() for d in docs}
    assert all(text not in texts or text in relevant_texts for text in data.queries.values())  # no trivial self-match
    result = CliRunner().invoke(main, ["eval", "make-stsb-retrieval", "-o", str(tmp_path / "r"), "--data-dir", str(DATA)])
    assert result.exit_code == 0, result.output
    assert len(load_queries(tmp_path / "r" / "queries.tsv")) == len(data.queries)
    assert sum(map(len, load_qrels(tmp_path / "r" / "qrels.tsv").values())) == sum(map(len, data.qrels.values()))


def test_chinese_stsb_retrieval_set_follows_the_same_recipe(tmp_path):
    require(DATA / "stsb-zh" / "STS-B.test.data")
    data = build_stsb_retrieval(DATA, lang="zh")
    assert len(data.corpus) > 10_000 and len(data.queries) > 100
    assert len(set(data.corpus.values())) == len(data.corpus) and all("\u4e00" <= c <= "\u9fff" for c in data.queries["q1"][:2])
    assert all(docs and all(d in data.corpus for d in docs) for docs in data.qrels.values())
    relevant_texts = {data.corpus[d] for docs in data.qrels.values() for d in docs}
    assert all(text not in set(data.corpus.values()) or text in relevant_texts for text in data.queries.values())
    result = CliRunner().invoke(main, ["eval", "make-stsb-retrieval", "-o", str(tmp_path / "zh"), "--data-dir", str(DATA), "--lang", "zh"])
    assert result.exit_code == 0, result.output
    assert f"{len(data.corpus)} documents, {len(data.queries)} queries" in result.stderr
