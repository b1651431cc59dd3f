"""Command line: happy paths and the one-line errors with exit codes 1 (data) and 2 (usage)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("Error:")
    for fragment in fragments:
        assert fragment in message


@pytest.fixture
def built(tmp_path, tiny_corpus, tiny_model_dir):
    result = run("index", "build", tiny_corpus, "-o", tmp_path / "idx", "--model", tiny_model_dir)
    assert result.exit_code == 0, result.output
    return tmp_path / "idx"


def test_build_info_and_query_json(built, tiny_model_dir):
    info = json.loads(run("index", "info", built, "--json").stdout)
    assert (info["document_count"], info["embedding_dim"], info["metric"], info["model"]) == (12, 32, "inner_product", str(tiny_model_dir))
    assert {"format_version", "normalized", "created", "simsearch_version"} <= info.keys()
    result = run("query", built, "the cat runs in the park", "-k", "2", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["query"] == "the cat runs in the park"
    assert [h["id"] for h in answer["hits"]][0] == 5 and len(answer["hits"]) == 2
    assert set(answer["hits"][0]) == {"id", "score", "text", "dense_rank", "lexical_rank"}  # the default mode fuses both sides
    dense = json.loads(run("query", built, "the cat runs in the park", "-k", "2", "--json", "--mode", "dense").stdout)
    assert set(dense["hits"][0]) == {"id", "score", "text"}


def test_query_prints_metadata_fields_in_json(tmp_path, tiny_model_dir):
    (tmp_path / "c.jsonl").write_text('{"text": "a red car", "id": 40, "lang": "en"}\n{"text": "a blue train", "id": 41}\n', encoding="utf-8")
    assert run("index", "build", tmp_path / "c.jsonl", "-o", tmp_path / "idx", "--model", tiny_model_dir).exit_code == 0
    hit = json.loads(run("query", tmp_path / "idx", "a red car", "-k", "1", "--json").stdout)["hits"][0]
    assert (hit["id"], hit["text"], hit["lang"]) == (40, "a red car", "en")


def test_encode_writes_normalized_rows_in_file_order(tmp_path, tiny_corpus, tiny_model_dir):
    result = run("encode", tiny_corpus, "-o", tmp_path / "v.npy", "--model", tiny_model_dir)
    assert result.exit_code == 0, result.output
    vectors = np.load(tmp_path / "v.npy")
    assert vectors.shape == (12, 32) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_missing_corpus_file_is_a_usage_error(tmp_path):
    assert_one_line_error(run("index", "build", tmp_path / "nope.txt", "-o", tmp_path / "idx"), 2, "nope.txt", "does not exist")


def test_empty_corpus_is_a_data_error(tmp_path):
    (tmp_path / "e.txt").write_text("\n  \n", encoding="utf-8")
    assert_one_line_error(run("index", "build", tmp_path / "e.txt", "-o", tmp_path / "idx"), 1, "e.txt", "no documents")
    assert not (tmp_path / "idx").exists()


def test_tsv_without_the_named_column_is_a_usage_error(tmp_path):
    (tmp_path / "c.tsv").write_text("body\tx\nhello\t1\n", encoding="utf-8")
    result = run("index", "build", tmp_path / "c.tsv", "-o", tmp_path / "idx", "--text-column", "sentence")
    assert_one_line_error(result, 2, "c.tsv:1", "'sentence'", "body, x")


def test_line_that_is_not_utf8_is_a_data_error(tmp_path):
    (tmp_path / "c.txt").write_bytes(b"good line\nbad \xe9 line\n")
    assert_one_line_error(run("index", "build", tmp_path / "c.txt", "-o", tmp_path / "idx"), 1, "c.txt:2", "UTF-8")


def test_folder_without_manifest_is_a_data_error(tmp_path):
    (tmp_path / "notindex").mkdir()
    assert_one_line_error(run("query", tmp_path / "notindex", "hello"), 1, "notindex", "manifest.json")
    assert_one_line_error(run("index", "info", tmp_path / "notindex"), 1, "manifest.json")


def test_k_zero_is_a_usage_error(built):
    assert_one_line_error(run("query", built, "hello", "-k", "0"), 2, "-k")


def test_bad_input_never_touches_an_existing_index(built, tmp_path):
    before = {p.name: p.read_bytes() for p in built.iterdir()}
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\n")
    assert_one_line_error(run("index", "build", tmp_path / "bad.txt", "-o", built, "--overwrite"), 1, "bad.txt:2")
    assert_one_line_error(run("index", "build", tmp_path / "bad.txt", "-o", built), 2, "already exists")
    assert {p.name: p.read_bytes() for p in built.iterdir()} == before


def test_query_needs_exactly_one_of_text_or_file(built, tmp_path):
    assert_one_line_error(run("query", built), 2, "exactly one")


def test_unknown_model_is_a_usage_error(tmp_path, tiny_corpus):
    (tmp_path / "empty-model").mkdir()
    assert_one_line_error(run("index", "build", tiny_corpus, "-o", tmp_path / "idx", "--model", tmp_path / "empty-model"), 2, "not a sentence-transformers")


def test_bench_encode_says_error_once_when_a_worker_fails(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}", encoding="utf-8")  # a model folder with nothing to load
    (tmp_path / "s.txt").write_text("a dog\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["bench", "encode", "--model", str(broken), "--backend", "torch", "--data", str(tmp_path / "s.txt"), "--repeats", "1"])
    assert result.exit_code == 1, result.output
    assert result.output.count("Error:") == 1 and "the torch worker failed (exit 1): cannot load model" in result.output
