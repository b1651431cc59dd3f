"""The Ray engine (`--engine ray`) against the local build: same ids, texts, metadata and results; sharded folders; a killed worker; resume.

Runs a local Ray with 2 CPUs, started once for the module (its start-up is most of the cost); skipped without the `distributed` extra.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from common.corpus import CorpusSpec
from common.measures import recall_at_k
from conftest import TINY_WORDS, Decoys, crash_on_call
from index.build import BuildConfig
from index.partial import PROGRESS_NAME, PartialBuild, partial_path
from index.store import STORE_NAME, DocStore

ray = pytest.importorskip("ray")

from distributed.engine import RayOptions  # noqa: E402
from simsearch import api  # noqa: E402

TWO_WORKERS = RayOptions(workers=2)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray with 2 CPUs for the whole module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """300 distinct sentences of the tiny model's words as a TSV with a metadata column and a blank line."""
    rng = np.random.default_rng(7)
    sentences: dict[str, None] = {}
    while len(sentences) < 300:
        sentences[" ".join(rng.choice(TINY_WORDS, size=6))] = None
    path = tmp_path_factory.mktemp("corpus") / "corpus.tsv"
    rows = [f"{text}\t{'even' if i % 2 else 'odd'}" for i, text in enumerate(sentences)]
    rows.insert(120, "\t")
    path.write_text("text\tparity\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def documents(folder: Path) -> dict[int, tuple[str, dict]]:
    store = DocStore.open(folder / STORE_NAME)
    try:
        return store.get([i for ids, _ in store.iter_texts() for i in ids])
    finally:
        store.close()


def search_all(folder: Path, model: str, k: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query vectors, scores, ids): every 5th document's text searched in `folder`."""
    index = api.open_index(folder, model=model, gpu="off")
    texts = [text for _, (text, _) in sorted(documents(folder).items())][::5]
    queries = index.encoder.encode(texts)
    scores, ids = index.search_ids(queries, k)
    return queries, scores, ids


@pytest.fixture(scope="module")
def local_flat(corpus, tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "flat"
    api.build(corpus, out, BuildConfig(chunk_size=64), model=str(tiny_model_dir))
    return out


def test_ray_flat_build_equals_local(corpus, tiny_model_dir, local_flat, tmp_path):
    out = tmp_path / "ray-flat"
    manifest = api.build(corpus, out, BuildConfig(chunk_size=64), model=str(tiny_model_dir), ray_options=TWO_WORKERS)
    assert documents(out) == documents(local_flat)
    assert len(documents(out)) == manifest.document_count == 300
    # Ray may hand all five batches to the actor that started first, so one or both are seen.
    assert manifest.engine["name"] == "ray" and manifest.engine["workers"] == 2 and manifest.engine["actors_seen"] in (1, 2) and manifest.engine["docs_per_second"] > 0
    _, local_scores, local_ids = search_all(local_flat, str(tiny_model_dir))
    _, ray_scores, ray_ids = search_all(out, str(tiny_model_dir))
    np.testing.assert_array_equal(ray_ids, local_ids)
    np.testing.assert_allclose(ray_scores, local_scores, atol=1e-5)


def test_ray_two_shards_equal_unsharded_flat(corpus, tiny_model_dir, local_flat, tmp_path):
    out = tmp_path / "ray-shards"
    manifest = api.build(corpus, out, BuildConfig(chunk_size=64), model=str(tiny_model_dir), ray_options=RayOptions(workers=2, shards=2))
    assert [s["documents"] for s in manifest.shards] == [150, 150] and manifest.format_version == 3
    assert not (out / "vectors.faiss").exists() and all((out / s["path"] / "vectors.faiss").is_file() for s in manifest.shards)
    _, local_scores, local_ids = search_all(local_flat, str(tiny_model_dir))
    _, shard_scores, shard_ids = search_all(out, str(tiny_model_dir))
    np.testing.assert_array_equal(shard_ids, local_ids)
    np.testing.assert_allclose(shard_scores, local_scores, atol=1e-5)
    odd = api.query(out, "a man is playing guitar", k=5, where={"parity": "odd"}, model=str(tiny_model_dir), gpu="off")
    assert len(odd.hits[0]) == 5 and all(h.metadata == {"parity": "odd"} for h in odd.hits[0])
    info = CliRunner().invoke(__import__("cli").main, ["index", "info", str(out)])
    assert info.exit_code == 0 and "shards: 2" in info.output and "engine: name ray" in info.output


def test_ray_ivf_recall_within_001_of_local(corpus, tiny_model_dir, local_flat, tmp_path):
    config = BuildConfig(chunk_size=64, index_type="ivf")
    api.build(corpus, tmp_path / "local-ivf", config, model=str(tiny_model_dir))
    api.build(corpus, tmp_path / "ray-ivf", config, model=str(tiny_model_dir), ray_options=TWO_WORKERS)
    queries, _, exact = search_all(local_flat, str(tiny_model_dir))
    recalls = [
        recall_at_k(api.open_index(tmp_path / name, model=str(tiny_model_dir), gpu="off").search_ids(queries, 10)[1], exact, 10)
        for name in ("local-ivf", "ray-ivf")
    ]
    assert documents(tmp_path / "ray-ivf") == documents(local_flat)
    assert recalls[0] > 0.5 and abs(recalls[0] - recalls[1]) <= 0.01


def test_ray_auto_measures_the_candidates_on_the_recorded_vectors_like_the_local_build(corpus, tiny_model_dir, tmp_path):
    config = BuildConfig(chunk_size=64, index_type="auto", auto_budget=30)
    local = api.build(corpus, tmp_path / "local-auto", config, model=str(tiny_model_dir))
    ray_built = api.build(corpus, tmp_path / "ray-auto", config, model=str(tiny_model_dir), ray_options=RayOptions(workers=2, shards=2))
    mine, theirs = local.choice["selection"], ray_built.choice["selection"]
    assert (theirs["sample"], theirs["queries"]) == (mine["sample"], mine["queries"]) == (300, 30)
    assert [c["label"] for c in theirs["candidates"]] == [c["label"] for c in mine["candidates"]]
    for a, b in zip(theirs["candidates"], mine["candidates"]):  # the same sample of (nearly: batched differently) the same vectors
        assert a["measured"] and b["measured"] and abs(a["recall_at_10"] - b["recall_at_10"]) <= 0.02, (a, b)
    chosen = next(c for c in theirs["candidates"] if c["factory"] == ray_built.faiss_factory)
    assert chosen["measured"] and chosen["reached"] and len(ray_built.shards) == 2 and ray_built.document_count == 300


def test_killed_worker_still_gives_complete_index(corpus, tiny_model_dir, local_flat, tmp_path):
    import psutil

    out = tmp_path / "killed"
    result: dict = {}

    def run() -> None:
        result["manifest"] = api.build(corpus, out, BuildConfig(chunk_size=8), model=str(tiny_model_dir), ray_options=TWO_WORKERS)

    builder = threading.Thread(target=run)
    builder.start()
    progress, deadline, victim = partial_path(out) / PROGRESS_NAME, time.monotonic() + 120, None
    while victim is None and time.monotonic() < deadline and builder.is_alive():
        if progress.is_file() and json.loads(progress.read_text())["documents_done"] > 0:
            workers = [p for p in psutil.process_iter(["cmdline"]) if "EncodeBlocks" in " ".join(p.info["cmdline"] or [])]
            if workers:
                victim = workers[0].pid
                os.kill(victim, signal.SIGKILL)
        time.sleep(0.05)
    killed_mid_build = builder.is_alive()
    builder.join(timeout=180)
    assert victim is not None and killed_mid_build
    assert documents(out) == documents(local_flat)
    _, scores, ids = search_all(out, str(tiny_model_dir))
    _, local_scores, local_ids = search_all(local_flat, str(tiny_model_dir))
    np.testing.assert_array_equal(ids, local_ids)


def test_ray_builds_leave_siblings_named_like_their_temporaries(corpus, tiny_model_dir, tmp_path, tiny_corpus):
    out = tmp_path / "docs"
    decoys = Decoys(out, tiny_corpus, tiny_model_dir)
    for overwrite in (False, True):
        api.build(corpus, out, BuildConfig(chunk_size=64, overwrite=overwrite), model=str(tiny_model_dir), ray_options=TWO_WORKERS)
        decoys.assert_intact()
    assert len(documents(out)) == 300


def test_interrupted_ray_build_resumes(corpus, tiny_model_dir, local_flat, tmp_path, monkeypatch):
    out, config = tmp_path / "resumed", BuildConfig(chunk_size=32)
    crash_on_call(monkeypatch, PartialBuild, "record_chunk", 4, KeyboardInterrupt())
    with pytest.raises(Exception, match="--resume"):
        api.build(corpus, out, config, model=str(tiny_model_dir), ray_options=TWO_WORKERS)
    monkeypatch.undo()
    recorded = json.loads((partial_path(out) / PROGRESS_NAME).read_text())["documents_done"]
    manifest = api.build(corpus, out, BuildConfig(chunk_size=32, resume=True), model=str(tiny_model_dir), ray_options=TWO_WORKERS)
    assert 0 < recorded < 300 and manifest.engine["resumed_from"] == recorded
    assert documents(out) == documents(local_flat)


def test_ray_encode_npy_and_parquet_match_local(corpus, tiny_model_dir, tmp_path):
    import pyarrow.parquet as pq

    spec = CorpusSpec(corpus)
    api.encode_file(spec, tmp_path / "local.npy", str(tiny_model_dir))
    api.encode_file(spec, tmp_path / "ray.npy", str(tiny_model_dir), ray_options=TWO_WORKERS)
    local, remote = np.load(tmp_path / "local.npy"), np.load(tmp_path / "ray.npy")
    np.testing.assert_allclose(remote, local, atol=1e-5)
    ids = np.load(tmp_path / "ray.ids.npy")
    assert len(ids) == 300 and ids[0] == 2 and len(np.unique(ids)) == 300
    api.encode_file(spec, tmp_path / "parquet", str(tiny_model_dir), ray_options=TWO_WORKERS)
    table = pq.read_table(tmp_path / "parquet").sort_by("id")
    np.testing.assert_array_equal(table.column("id").to_numpy(), np.sort(ids))
    np.testing.assert_allclose(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), local[np.argsort(ids)], atol=1e-5)


def test_ray_reads_a_folder_and_a_file_url(tiny_model_dir, tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "a.txt").write_text("a man is playing guitar\nthe dog sleeps\n", encoding="utf-8")
    (folder / "b.jsonl").write_text('{"text": "stocks fell today", "src": "news"}\n', encoding="utf-8")
    api.build(str(folder), tmp_path / "from-folder", BuildConfig(), model=str(tiny_model_dir), ray_options=TWO_WORKERS)
    assert documents(tmp_path / "from-folder") == {1: ("a man is playing guitar", {}), 2: ("the dog sleeps", {}), 3: ("stocks fell today", {"src": "news"})}
    url = (folder / "a.txt").resolve().as_uri()
    api.build(url, tmp_path / "from-url", BuildConfig(), model=str(tiny_model_dir), ray_options=TWO_WORKERS)
    assert documents(tmp_path / "from-url") == {1: ("a man is playing guitar", {}), 2: ("the dog sleeps", {})}


def test_bad_line_fails_like_the_local_build(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "no text field"}\n', encoding="utf-8")
    with pytest.raises(Exception) as local_error:
        api.build(bad, tmp_path / "local", BuildConfig(), model=str(tiny_model_dir))
    with pytest.raises(Exception) as ray_error:
        api.build(bad, tmp_path / "ray", BuildConfig(), model=str(tiny_model_dir), ray_options=TWO_WORKERS)
    assert type(ray_error.value) is type(local_error.value) and str(ray_error.value) == str(local_error.value) == f"{bad}:2: field 'text' is missing"


def test_ray_only_options_refused_with_the_local_engine(corpus, tmp_path):
    from cli import main

    result = CliRunner().invoke(main, ["index", "build", str(corpus), "-o", str(tmp_path / "x"), "--shards", "2"])
    assert result.exit_code == 2 and "--shards only apply with --engine ray" in result.output
