"""Index folders: build, search, persistence, atomic replacement."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import STSB_EN, crash_on_call, require
from common.corpus import CorpusSpec
from embedder import SentenceEncoder
from errors import UsageError
from eval import load_sts
from index import BuildConfig, Manifest, build_index, load_index
from simsearch import api

ROOT = Path(__file__).resolve().parents[1]


def build_tiny(corpus: Path, out: Path, model_dir: Path, **kwargs) -> Manifest:
    return api.build(CorpusSpec(corpus), out, BuildConfig(**kwargs), model=str(model_dir))


def test_search_returns_each_document_first_for_its_own_text(tmp_path, tiny_corpus, tiny_model_dir):
    manifest = build_tiny(tiny_corpus, tmp_path / "idx", tiny_model_dir)
    assert (manifest.document_count, manifest.source["blank_lines_skipped"], manifest.embedding_dim) == (12, 1, 32)
    searcher = api.open_index(tmp_path / "idx")
    lines = tiny_corpus.read_text().splitlines()
    queries = [(n, t) for n, t in enumerate(lines, start=1) if t]
    results = searcher.search([t for _, t in queries], k=3)
    assert [hits[0].id for hits in results] == [n for n, _ in queries]
    assert all(hits[0].text == text and hits[0].score == pytest.approx(1.0, abs=1e-5) for (_, text), hits in zip(queries, results))
    assert all(len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score for hits in results)


def test_k_larger_than_the_index_returns_every_document(tmp_path, tiny_corpus, tiny_model_dir):
    build_tiny(tiny_corpus, tmp_path / "idx", tiny_model_dir)
    hits = api.open_index(tmp_path / "idx").search(["a dog"], k=100)[0]
    assert sorted(h.id for h in hits) == [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13]


def test_round_trip_in_a_new_process_gives_the_same_hits_and_scores(tmp_path, tiny_corpus, tiny_model_dir):
    build_tiny(tiny_corpus, tmp_path / "idx", tiny_model_dir)
    queries = ["a dog in the park", "stocks today", "a man eating"]
    (tmp_path / "q.txt").write_text("\n".join(queries) + "\n", encoding="utf-8")
    here = api.open_index(tmp_path / "idx").search(queries, k=5)
    run = subprocess.run(
        [sys.executable, "-m", "cli", "query", str(tmp_path / "idx"), "--queries", str(tmp_path / "q.txt"), "-k", "5", "--json"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )
    there = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["query"] for r in there] == queries
    for hits, answer in zip(here, there):
        assert [h["id"] for h in answer["hits"]] == [h.id for h in hits]
        assert [h["score"] for h in answer["hits"]] == pytest.approx([h.score for h in hits], abs=1e-6)
        assert [h["text"] for h in answer["hits"]] == [h.text for h in hits]


def test_existing_index_is_not_overwritten_without_the_flag(tmp_path, tiny_corpus, tiny_model_dir):
    build_tiny(tiny_corpus, tmp_path / "idx", tiny_model_dir)
    before = (tmp_path / "idx" / "manifest.json").read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        build_tiny(tiny_corpus, tmp_path / "idx", tiny_model_dir)
    assert (tmp_path / "idx" / "manifest.json").read_bytes() == before


def test_crash_during_rebuild_leaves_the_previous_index_loadable_and_unchanged(tmp_path, tiny_corpus, tiny_model_dir, monkeypatch):
    build_tiny(tiny_corpus, tmp_path / "idx", tiny_model_dir)
    before = api.open_index(tmp_path / "idx").search(["a dog"], k=3)[0]
    bigger = tmp_path / "bigger.txt"
    bigger.write_text("\n".join(f"the dog runs {i}" for i in range(50)) + "\n", encoding="utf-8")
    # Call 1 encodes the tuning sample, call 3 the second chunk.
    calls = crash_on_call(monkeypatch, SentenceEncoder, "encode", 3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_tiny(bigger, tmp_path / "idx", tiny_model_dir, overwrite=True, chunk_size=10)
    assert calls["n"] == 3
    # Only the hidden progress folder that `--resume` continues is left beside the index (its lock and the version its link names aside).
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith((".idx.lock", ".idx.v-"))) == [".idx.partial", "bigger.txt", "corpus.txt", "idx"]
    after = api.open_index(tmp_path / "idx").search(["a dog"], k=3)[0]
    assert Manifest.read(tmp_path / "idx").document_count == 12
    assert [(h.id, h.score) for h in after] == [(h.id, h.score) for h in before]


def test_overwrite_replaces_the_index_once_the_new_one_is_complete(tmp_path, tiny_corpus, tiny_model_dir):
    build_tiny(tiny_corpus, tmp_path / "idx", tiny_model_dir)
    other = tmp_path / "other.txt"
    other.write_text("rain in the city\nsun in the park\n", encoding="utf-8")
    build_tiny(other, tmp_path / "idx", tiny_model_dir, overwrite=True)
    assert Manifest.read(tmp_path / "idx").document_count == 2
    assert [h.text for h in api.open_index(tmp_path / "idx").search(["sun in the park"], k=1)[0]] == ["sun in the park"]


@pytest.mark.slow
def test_every_sampled_stsb_sentence_finds_itself_first(tmp_path, default_encoder):
    """Unique STS-B sentences (all splits) indexed with the default model; 200 of them query themselves."""
    path = require(STSB_EN)
    sentences = []
    for split in ("train", "dev", "test"):
        data = load_sts(path, split)
        sentences += data.sentences1 + data.sentences2
    # The model is uncased and ignores spacing: sentences equal after folding embed identically.
    unique = list({" ".join(s.lower().split()): s for s in sentences}.values())
    corpus = tmp_path / "stsb.txt"
    corpus.write_text("\n".join(unique) + "\n", encoding="utf-8")
    build_index(CorpusSpec(corpus), tmp_path / "idx", default_encoder)
    searcher = load_index(tmp_path / "idx", default_encoder)
    assert searcher.manifest.document_count == len(unique) > 10_000
    picks = random.Random(0).sample(range(len(unique)), 200)
    results = searcher.search_vectors(default_encoder.encode([unique[i] for i in picks]), k=2)
    assert [hits[0].id for hits in results] == [i + 1 for i in picks]
    assert np.mean([hits[0].score - hits[1].score for hits in results]) > 0.02
