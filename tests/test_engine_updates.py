"""Index engine at the text level: types through the CLI, add/remove/upsert, crash safety, --resume, filters, mmap, GPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import index.build
from cli import main
from conftest import TINY_WORDS, crash_on_call
from common.corpus import CorpusSpec
from embedder import SentenceEncoder
from errors import DataError, Interrupted, UsageError
from index import BuildConfig, Manifest
from simsearch import api
from index.gpu import faiss_gpu_count, torch_cuda_available
from index.integrity import verify_index
from index.partial import partial_path
from index.update import add_documents, remove_documents


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def sentences(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(TINY_WORDS, size=rng.integers(3, 8))) + f" {i}" for i in range(count)]


@pytest.fixture
def docs(tmp_path) -> Path:
    """300 JSONL documents with ids 1000.. and a `lang` field (every third is "de")."""
    texts = sentences(300, 0)
    return write_jsonl(tmp_path / "docs.jsonl", [{"id": 1000 + i, "text": t, "lang": "de" if i % 3 == 0 else "en"} for i, t in enumerate(texts)])


def build(corpus: Path, out: Path, model_dir: Path, **kwargs) -> Manifest:
    return api.build(CorpusSpec(corpus), out, BuildConfig(**kwargs), model=str(model_dir))


def all_ids(folder: Path) -> set[int]:
    searcher = api.open_index(folder)
    return set(searcher.store.get(range(0, 10_000)))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("index_type", ["ivf", "hnsw", "auto"])
def test_cli_build_records_the_choice_and_quality_and_info_explains_it(tmp_path, docs, tiny_model_dir, index_type):
    result = run("index", "build", docs, "-o", tmp_path / "idx", "--model", tiny_model_dir, "--type", index_type, "--max-memory", "1G")
    assert result.exit_code == 0, result.output
    info = json.loads(run("index", "info", tmp_path / "idx", "--json").stdout)
    measured = {c["factory"]: c for c in info["choice"].get("selection", {}).get("candidates", [])}
    expected_type = measured[info["faiss_factory"]]["index_type"] if index_type == "auto" else index_type  # auto: the type it measured and chose
    assert (info["index_type"], info["document_count"], info["format_version"]) == (expected_type, 300, 2)
    assert info["choice"]["requested"] == index_type and info["choice"]["max_memory"] == 2**30
    assert info["quality"]["queries"] == 30 and 0.9 <= info["quality"]["recall_at_10"] <= 1.0 and info["quality"]["qps"] > 0
    if index_type != "auto":
        tunable = {"ivf": "nprobe", "hnsw": "efSearch"}[index_type]
        assert set(info["search_params"]) == {tunable} and info["quality"]["reached"]
    text = run("index", "info", tmp_path / "idx").stdout
    assert "recall@10" in text and "why:" in text
    if index_type == "auto":
        assert "auto measured" in text and f"* {measured[info['faiss_factory']]['label']}" in text


def test_each_document_finds_itself_with_every_type(tmp_path, docs, tiny_model_dir):
    for index_type in ("flat", "ivf", "hnsw", "sq8", "ivfpq"):
        build(docs, tmp_path / index_type, tiny_model_dir, index_type=index_type)
        searcher = api.open_index(tmp_path / index_type)
        texts = [json.loads(line)["text"] for line in docs.read_text().splitlines()[:20]]
        top = [hits[0].id for hits in searcher.search(texts, k=1)]
        assert sum(t == 1000 + i for i, t in enumerate(top)) >= (20 if index_type != "ivfpq" else 10), index_type


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw", "binary", "binary-hnsw"])
def test_add_remove_and_upsert(tmp_path, docs, tiny_model_dir, index_type):
    out = tmp_path / "idx"
    build(docs, out, tiny_model_dir, index_type=index_type)
    new = write_jsonl(tmp_path / "new.jsonl", [{"id": 5000, "text": "a red car is fast", "lang": "en"}, {"id": 5001, "text": "the blue train is slow"}])
    manifest = api.add(out, CorpusSpec(new))
    assert manifest.document_count == 302 and api.open_index(out).search(["a red car is fast"], k=1)[0][0].id == 5000

    clash = write_jsonl(tmp_path / "clash.jsonl", [{"id": 5000, "text": "rain in the city"}, {"id": 5002, "text": "stocks fell today"}])
    before = snapshot(out)
    with pytest.raises(UsageError, match=r"1 id\(s\) already in .*5000.*--upsert"):
        api.add(out, CorpusSpec(clash))
    assert snapshot(out) == before

    manifest = api.add(out, CorpusSpec(clash), upsert=True)
    assert manifest.document_count == 303 and manifest.source["updates"][-1] == {"added": 1, "replaced": 1, "corpus": str(clash.resolve()), "backend": "torch"}
    searcher = api.open_index(out)
    hit = searcher.search(["rain in the city"], k=1)[0][0]
    assert (hit.id, hit.text, hit.score) == (5000, "rain in the city", pytest.approx(1.0, abs=1e-5))
    assert all(h.text != "a red car is fast" for h in searcher.search(["a red car is fast"], k=5)[0])  # the old vector is gone

    manifest = remove_documents(out, [5000, 1000, 1001])
    assert manifest.document_count == 300
    searcher = api.open_index(out)
    texts = [json.loads(line)["text"] for line in docs.read_text().splitlines()[:5]] + ["rain in the city", "a red car is fast"]
    returned = {h.id for hits in searcher.search(texts, k=50) for h in hits}
    assert returned.isdisjoint({5000, 1000, 1001}) and len(returned) > 50
    assert searcher.search(["stocks fell today"], k=1)[0][0].id == 5002 and searcher.store.count() == 300
    with pytest.raises(DataError, match="not in the index.*5000"):
        remove_documents(out, [5000])
    assert verify_index(out).documents == 300  # checksums, and FAISS, SQLite (and the floats kept for rescoring) hold the same count


@pytest.mark.parametrize("index_type", ["hnsw", "binary-hnsw"])
def test_hnsw_tombstones_are_compacted_away(tmp_path, docs, tiny_model_dir, index_type):
    out = tmp_path / "idx"
    build(docs, out, tiny_model_dir, index_type=index_type)
    remove_documents(out, range(1000, 1050))  # 50 of 300: tombstones, no rebuild yet
    manifest = Manifest.read(out)
    assert (manifest.document_count, manifest.vector_count) == (250, 300)
    assert len(np.load(out / "tombstones.npy")) == 50
    texts = [json.loads(line)["text"] for line in docs.read_text().splitlines()[:60]]
    assert {h.id for hits in api.open_index(out).search(texts, k=20) for h in hits}.isdisjoint(range(1000, 1050))
    remove_documents(out, range(1050, 1100))  # 100 of 300 > 25 %: the graph is rebuilt without them
    manifest = Manifest.read(out)
    assert (manifest.document_count, manifest.vector_count) == (200, 200)
    assert not (out / "tombstones.npy").exists()
    found = {h.id for hits in api.open_index(out).search(texts + ["a dog"], k=20) for h in hits}
    assert min(found) >= 1100 and len(found) > 20


def test_cli_add_and_remove(tmp_path, docs, tiny_model_dir):
    out = tmp_path / "idx"
    assert run("index", "build", docs, "-o", out, "--model", tiny_model_dir, "--type", "ivf").exit_code == 0
    (tmp_path / "more.tsv").write_text("doc\ttext\tlang\n7\tthe cat sleeps\ten\n", encoding="utf-8")
    result = run("index", "add", out, tmp_path / "more.tsv", "--id-column", "doc")
    assert result.exit_code == 0, result.output
    assert "added 1, replaced 0" in result.stderr
    again = run("index", "add", out, tmp_path / "more.tsv", "--id-column", "doc")
    assert again.exit_code == 2 and "already in" in again.stderr and "Traceback" not in again.output
    (tmp_path / "ids.txt").write_text("7\n1000\n\n", encoding="utf-8")
    assert run("index", "remove", out, "--ids-file", tmp_path / "ids.txt").exit_code == 0
    assert Manifest.read(out).document_count == 299
    assert run("index", "remove", out, "1001", "1002").exit_code == 0
    missing = run("index", "remove", out, "1001")
    assert missing.exit_code == 1 and "not in the index" in missing.stderr
    assert run("index", "remove", out).exit_code == 2


def test_crash_in_the_middle_of_an_add_leaves_the_previous_index_unchanged(tmp_path, docs, tiny_model_dir, monkeypatch):
    out = tmp_path / "idx"
    build(docs, out, tiny_model_dir, index_type="ivf")
    before_files, before_hits = snapshot(out), api.open_index(out).search(["a dog"], k=5)[0]
    more = write_jsonl(tmp_path / "more.jsonl", [{"id": 9000 + i, "text": t} for i, t in enumerate(sentences(50, 1))])
    encoder = api.load_encoder(str(tiny_model_dir))
    calls = crash_on_call(monkeypatch, encoder, "encode", 3)  # the third chunk fails after two were added to the copy
    with pytest.raises(RuntimeError, match="simulated crash"):
        add_documents(out, CorpusSpec(more), encoder, chunk_size=10)
    assert calls["n"] == 3
    assert snapshot(out) == before_files
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".idx.tmp")] == []
    assert [(h.id, h.score) for h in api.open_index(out).search(["a dog"], k=5)[0]] == [(h.id, h.score) for h in before_hits]


@pytest.mark.parametrize("index_type", ["ivf", "flat", "binary"])
def test_resume_after_an_interrupted_build_gives_the_same_index(tmp_path, docs, tiny_model_dir, monkeypatch, index_type):
    whole = build(docs, tmp_path / "whole", tiny_model_dir, index_type=index_type, chunk_size=64)
    real_encode = SentenceEncoder.encode
    crash_on_call(monkeypatch, SentenceEncoder, "encode", 5, KeyboardInterrupt())  # call 1: the sample; 2-4: chunks; 5 dies
    with pytest.raises(Interrupted, match="--resume"):
        build(docs, tmp_path / "resumed", tiny_model_dir, index_type=index_type, chunk_size=64)
    monkeypatch.setattr(SentenceEncoder, "encode", real_encode)
    progress = json.loads((partial_path(tmp_path / "resumed") / "progress.json").read_text())
    assert progress["documents_done"] == 192 and not (tmp_path / "resumed").exists()

    encoded: list[int] = []
    monkeypatch.setattr(SentenceEncoder, "encode", lambda self, texts, *a, **k: encoded.append(len(texts)) or real_encode(self, texts, *a, **k))
    resumed = build(docs, tmp_path / "resumed", tiny_model_dir, index_type=index_type, chunk_size=64, resume=True)
    assert sum(encoded) <= 300 - 192  # only the rest of the corpus was encoded
    assert not partial_path(tmp_path / "resumed").exists()
    assert (resumed.document_count, resumed.search_params, resumed.quality["recall_at_10"]) == (whole.document_count, whole.search_params, whole.quality["recall_at_10"])
    a, b = api.open_index(tmp_path / "whole"), api.open_index(tmp_path / "resumed")
    vectors = np.random.default_rng(0).standard_normal((20, 32)).astype(np.float32)
    assert [[(h.id, h.score, h.text) for h in hits] for hits in a.search_vectors(vectors, k=10)] == \
        [[(h.id, h.score, h.text) for h in hits] for hits in b.search_vectors(vectors, k=10)]
    assert a.store.count() == b.store.count() == 300


def test_resume_with_different_options_is_refused(tmp_path, docs, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(index.build, "encode_chunk", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(Interrupted):
        build(docs, tmp_path / "idx", tiny_model_dir, index_type="ivf")
    with pytest.raises(UsageError, match="different plan"):
        build(docs, tmp_path / "idx", tiny_model_dir, index_type="hnsw", resume=True)


def test_where_filter_returns_only_matching_documents(tmp_path, docs, tiny_model_dir):
    for index_type in ("flat", "ivf", "hnsw", "sq8"):
        out = tmp_path / index_type
        build(docs, out, tiny_model_dir, index_type=index_type)
        hits = api.open_index(out).search(["a man is playing guitar"], k=20, where={"lang": "de"})[0]
        assert len(hits) == 20 and {h.metadata["lang"] for h in hits} == {"de"}, index_type
        assert api.open_index(out).search(["a dog"], k=5, where={"lang": "fr"}) == [[]]
    result = run("query", tmp_path / "flat", "a dog", "-k", "3", "--json", "--where", "lang=de")
    assert result.exit_code == 0, result.output
    assert [h["lang"] for h in json.loads(result.stdout)["hits"]] == ["de"] * 3
    assert run("query", tmp_path / "flat", "a dog", "--where", "lang").exit_code == 2


def test_memory_mapped_loading_gives_the_same_hits(tmp_path, docs, tiny_model_dir):
    for index_type in ("flat", "ivf", "hnsw", "sq8"):
        build(docs, tmp_path / index_type, tiny_model_dir, index_type=index_type)
        vectors = np.random.default_rng(1).standard_normal((5, 32)).astype(np.float32)
        loaded = api.open_index(tmp_path / index_type).search_ids(vectors, 10)
        mapped = api.open_index(tmp_path / index_type, mmap=True).search_ids(vectors, 10)
        assert np.array_equal(loaded[1], mapped[1]) and np.allclose(loaded[0], mapped[0]), index_type


@pytest.mark.skipif(faiss_gpu_count() == 0, reason="FAISS GPU build with a visible GPU not available")
def test_faiss_gpu_search_matches_the_cpu(tmp_path, docs, tiny_model_dir):
    for index_type in ("flat", "ivf"):
        build(docs, tmp_path / index_type, tiny_model_dir, index_type=index_type)
        vectors = np.random.default_rng(2).standard_normal((5, 32)).astype(np.float32)
        gpu, cpu = api.open_index(tmp_path / index_type, gpu="one"), api.open_index(tmp_path / index_type, gpu="off")
        assert gpu.device.startswith("FAISS GPU")
        assert np.array_equal(gpu.search_ids(vectors, 10)[1], cpu.search_ids(vectors, 10)[1])


@pytest.mark.skipif(faiss_gpu_count() > 0 or not torch_cuda_available(), reason="needs torch CUDA with the FAISS CPU build")
def test_torch_exact_search_matches_faiss_flat(tmp_path, docs, tiny_model_dir):
    build(docs, tmp_path / "flat", tiny_model_dir)
    vectors = np.random.default_rng(3).standard_normal((5, 32)).astype(np.float32)
    gpu, cpu = api.open_index(tmp_path / "flat", gpu="auto"), api.open_index(tmp_path / "flat", gpu="off")
    assert gpu.device.startswith("torch CUDA")
    assert np.array_equal(gpu.search_ids(vectors, 10)[1], cpu.search_ids(vectors, 10)[1])
