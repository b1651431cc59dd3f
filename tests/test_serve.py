"""`simsearch serve`: a real uvicorn server on 127.0.0.1 (in a thread, or a subprocess for signals) and real HTTP clients."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from click.testing import CliRunner
from sentence_transformers import SentenceTransformer

from cli import main
from conftest import Decoys
from common.corpus import CorpusSpec
from index import BuildConfig
from index.search import load_index
from server.app import create_app
from server.config import ServeConfig
from server.registry import Registry
from server.service import bind, server_settings
from simsearch import api
from simsearch.api import index_encoder

ROOT = Path(__file__).resolve().parents[1]
KEY = "test-key-0123456789"
SENTENCES = [
    "a man is playing guitar", "a woman is playing piano", "the dog sleeps on the sofa", "the cat runs in the park",
    "stocks fell today", "stocks rose today", "rain in the city", "a red car is fast", "the blue train is slow",
    "a big green dog", "a small cat is eating food", "the man is eating bread", "the sun is big", "a slow red train",
]
QUERIES = ["a dog on the sofa", "stocks today", "a fast car", "the man eating", "piano and guitar", "a cat in the park"]


def write_corpus(path: Path, sentences: list[str], first_id: int = 1) -> Path:
    rows = [{"id": first_id + i, "text": s, "lang": "en" if i % 2 == 0 else "fr", "n": i} for i, s in enumerate(sentences)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build(folder: Path, corpus: Path, model_dir: Path) -> Path:
    api.build(CorpusSpec(corpus), folder, BuildConfig(show_progress=False), model=str(model_dir))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """Four tiny indexes: docs (read only), other, edits (API writes), reloads (external writes)."""
    root = tmp_path_factory.mktemp("serve")
    corpus = write_corpus(root / "docs.jsonl", SENTENCES)
    small = write_corpus(root / "small.jsonl", SENTENCES[:5])
    return {name: build(root / name, small if name == "other" else corpus, tiny_model_dir) for name in ("docs", "other", "edits", "reloads")}


@contextmanager
def serving(config: ServeConfig, registry: Registry, rerankers: dict | None = None):
    """uvicorn in a thread on a free loopback port; yields the base URL; stops gracefully on exit."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(server_settings(create_app(config, registry, rerankers), config))  # the settings `simsearch serve` runs with
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "server did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def config_for(folders: dict[str, Path], names: tuple[str, ...], **kwargs) -> ServeConfig:
    return ServeConfig(folders=tuple(folders[n] for n in names), **({"max_body": 16_384, "max_queries": 40, "max_text_chars": 300, "reload_check_s": 0.2} | kwargs))


def registry(folders) -> Registry:
    """Each server its own registry: reloads and their counts belong to one app."""
    return Registry.load([folders[n] for n in ("docs", "other", "edits", "reloads")])


@pytest.fixture(scope="module")
def keyed(folders):
    """A server with an API key (writes enabled); yields an httpx client that sends the key."""
    with serving(config_for(folders, ("docs", "other", "edits", "reloads"), api_key=KEY), registry(folders)) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
            yield client


@pytest.fixture(scope="module")
def open_server(folders):
    """A server without a key (reads open, writes disabled)."""
    with serving(config_for(folders, ("docs", "other", "edits", "reloads")), registry(folders)) as url:
        yield url


def expected_hits(folder: Path, queries: list[str], k: int, where=None) -> list[list[dict]]:
    searcher = load_index(folder, index_encoder(api.info(folder)))
    return [[h.to_json() for h in row] for row in searcher.search(queries, k, where=where)]


def assert_same_hits(got: list[dict], want: list[dict]) -> None:
    assert [h["id"] for h in got] == [h["id"] for h in want]
    assert [{k: v for k, v in h.items() if k != "score"} for h in got] == [{k: v for k, v in h.items() if k != "score"} for h in want]
    assert np.allclose([h["score"] for h in got], [h["score"] for h in want], atol=1e-5)


def test_search_gives_the_hits_of_load_index(keyed, folders):
    body = keyed.post("/indexes/docs/search", json={"queries": QUERIES, "k": 5}).json()
    assert body["index"] == "docs" and [r["query"] for r in body["results"]] == QUERIES
    for result, want in zip(body["results"], expected_hits(folders["docs"], QUERIES, 5)):
        assert_same_hits(result["hits"], want)
        assert {"id", "score", "text", "lang", "n"} <= result["hits"][0].keys()
    first = keyed.post("/search", json={"queries": QUERIES[:2], "k": 3}).json()  # /search = the first index given
    assert first["index"] == "docs"
    filtered = keyed.post("/indexes/docs/search", json={"queries": QUERIES, "k": 4, "where": {"lang": "fr"}}).json()
    for result, want in zip(filtered["results"], expected_hits(folders["docs"], QUERIES, 4, {"lang": "fr"})):
        assert_same_hits(result["hits"], want)
        assert all(h["lang"] == "fr" for h in result["hits"])
    other = keyed.post("/indexes/other/search", json={"queries": ["stocks"], "k": 5}).json()
    assert sorted(h["id"] for h in other["results"][0]["hits"]) == [1, 2, 3, 4, 5]


def test_openai_client_embeddings_equal_simsearch_encode(open_server, folders, tiny_model_dir, tmp_path):
    import openai

    texts = QUERIES[:4]
    corpus = tmp_path / "texts.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    api.encode_file(corpus, tmp_path / "want.npy", model=str(tiny_model_dir))
    want = np.load(tmp_path / "want.npy")
    client = openai.OpenAI(base_url=f"{open_server}/v1", api_key="dummy")
    response = client.embeddings.create(model="docs", input=texts, encoding_format="float")
    assert [d.index for d in response.data] == [0, 1, 2, 3] and response.model == str(tiny_model_dir)
    assert np.allclose(np.array([d.embedding for d in response.data]), want, atol=1e-5)
    tokenizer = SentenceTransformer(str(tiny_model_dir)).tokenizer  # usage counts the model's tokens, [CLS] and [SEP] included
    assert response.usage.prompt_tokens == response.usage.total_tokens == sum(len(tokenizer(t)["input_ids"]) for t in texts)
    defaulted = client.embeddings.create(model="docs", input=texts)  # the client asks for base64 and decodes it itself
    assert np.allclose(np.array([d.embedding for d in defaulted.data]), want, atol=1e-5)
    single = client.embeddings.create(model=str(tiny_model_dir), input=texts[0], encoding_format="base64")
    assert np.allclose(np.frombuffer(base64.b64decode(single.data[0].embedding), dtype="<f4"), want[0], atol=1e-5)
    assert [m.id for m in client.models.list().data] == [str(tiny_model_dir)]
    encoded = httpx.post(f"{open_server}/encode", json={"texts": texts}).json()
    assert encoded["dim"] == 32 and np.allclose(encoded["vectors"], want, atol=1e-5)
    raw = httpx.post(f"{open_server}/encode", params={"format": "npy"}, json={"texts": texts, "model": "other"})
    assert np.allclose(np.load(io.BytesIO(raw.content), allow_pickle=False), want, atol=1e-5)


def test_one_model_on_two_backends_has_two_model_ids(folders, tiny_model_dir, tmp_path):
    """`/v1/models` ids differ by backend (`MODEL@onnx-int8`), each id picks its encoder, `/indexes` tells the served backend."""
    pytest.importorskip("onnxruntime")
    int8 = tmp_path / "int8"
    api.build(CorpusSpec(write_corpus(tmp_path / "c.jsonl", SENTENCES)), int8, BuildConfig(show_progress=False), model=str(tiny_model_dir), backend="onnx-int8")
    both = Registry.load([folders["docs"], int8])
    with serving(config_for({"docs": folders["docs"], "int8": int8}, ("docs", "int8")), both) as url:
        ids = [card["id"] for card in httpx.get(f"{url}/v1/models").json()["data"]]
        assert ids == [f"{tiny_model_dir}@torch", f"{tiny_model_dir}@onnx-int8"]
        for model_id, index in zip(ids, ("docs", "int8")):
            by_id = httpx.post(f"{url}/v1/embeddings", json={"model": model_id, "input": QUERIES[:2]}).json()
            by_index = httpx.post(f"{url}/v1/embeddings", json={"model": index, "input": QUERIES[:2]}).json()
            assert by_id["model"] == by_index["model"] == model_id and by_id["data"] == by_index["data"]
        summaries = {s["name"]: (s["backend"], s["served_backend"]) for s in httpx.get(f"{url}/indexes").json()["indexes"]}
        assert summaries == {"docs": ("torch", "torch"), "int8": ("onnx-int8", "onnx-int8")}
    with serving(config_for({"docs": folders["docs"], "int8": int8}, ("docs", "int8")), Registry.load([folders["docs"], int8], backend="torch")) as url:
        assert [card["id"] for card in httpx.get(f"{url}/v1/models").json()["data"]] == [str(tiny_model_dir)]  # one backend: the plain id
        assert httpx.get(f"{url}/indexes/int8").json()["served_backend"] == "torch"


@pytest.mark.parametrize(
    "path, body, status, fragment",
    [
        ("/indexes/docs/search", {"queries": ["x" * 5000] * 4}, 413, "max_body"),
        ("/indexes/docs/search", {"queries": ["a dog"] * 41}, 400, "max_queries"),
        ("/indexes/docs/search", {"queries": ["a dog " * 60]}, 400, "max_text_chars"),
        ("/indexes/docs/search", {"queries": ["a dog"], "k": 1001}, 400, "max_k"),
        ("/indexes/docs/search", {"queries": ["a dog"], "k": 15}, 400, "index_size"),
        ("/indexes/nope/search", {"queries": ["a dog"]}, 404, "no index named 'nope'"),
        ("/indexes/docs/search", b'{"queries": ["a dog"', 422, "JSON"),
        ("/indexes/docs/search", {"queries": "a dog"}, 422, "body.queries"),
        ("/indexes/docs/search", {"queries": ["a dog"], "k": "ten"}, 422, "body.k"),
        ("/indexes/docs/search", {"queries": ["a dog"], "top": 3}, 422, "body.top"),
        ("/indexes/docs/search", {"queries": ["a dog"], "where": {"colour": "red"}}, 400, "unknown field(s) colour"),
        ("/indexes/docs/search", {"queries": ["a dog"], "rescore": -1}, 422, "body.rescore"),
        ("/indexes/docs/search", {"queries": ["a dog"], "rescore": 4}, 400, "rescore: index 'docs' keeps no float vectors"),
        ("/encode", {"texts": ["a dog"], "model": "nope"}, 404, "no model 'nope'"),
        ("/v1/embeddings", {"input": [1, 2], "model": "docs"}, 422, "body.input"),
        ("/indexes/docs/search", b'{"queries": ["a dog", "\\ud800"]}', 422, "body.queries.1: cannot be encoded as UTF-8 (a lone surrogate"),
        ("/encode", b'{"texts": ["\\udfff a dog"]}', 422, "body.texts.0: cannot be encoded as UTF-8"),
        ("/v1/embeddings", b'{"input": "a \\ud800", "model": "docs"}', 422, "body.input: cannot be encoded as UTF-8 (a lone surrogate '\\ud800' at character 2)"),
        ("/v1/embeddings", b'{"input": ["a", "\\ud800"], "model": "docs"}', 422, "body.input: item 1: cannot be encoded as UTF-8"),
        ("/indexes/docs/search", b'{"queries": ["a dog"], "where": {"lang": "\\ud800"}}', 422, "body.where.lang: cannot be encoded as UTF-8"),
        ("/indexes/docs/documents", b'{"documents": [{"id": 90, "text": "\\ud800"}]}', 422, "body.documents.0.text: cannot be encoded"),
        ("/indexes/docs/search", b'{"queries": ["a \xff dog"]}', 400, "request body is not valid UTF-8 (byte 0xff at offset 16)"),
    ],
)
def test_every_limit_and_bad_request_has_its_status(keyed, path, body, status, fragment):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = keyed.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()
    assert isinstance(error["detail"], str) and fragment in error["detail"] + str(error.get("limit"))


def test_32_concurrent_clients_each_get_their_own_answers(keyed, folders):
    queries = [f"{a} {b}" for a in ("the dog", "a cat", "stocks", "a red car") for b in ("sleeps", "is fast", "fell", "in the city", "eats", "runs", "rose", "is slow")]
    assert len(queries) == 32
    want = dict(zip(queries, expected_hits(folders["docs"], queries, 3)))

    async def client(i: int, http: httpx.AsyncClient) -> list[tuple[str, list]]:
        answers = []
        for round_ in range(4):
            mine = [queries[(i + round_) % 32], queries[(i * 7 + round_) % 32]]
            body = (await http.post("/indexes/docs/search", json={"queries": mine, "k": 3})).json()
            answers += [(r["query"], r["hits"]) for r in body["results"]]
            assert [r["query"] for r in body["results"]] == mine
        return answers

    async def all_clients():
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=str(keyed.base_url), headers=keyed.headers, limits=limits, timeout=30) as http:
            return await asyncio.gather(*(client(i, http) for i in range(32)))

    for answers in asyncio.run(all_clients()):
        for query, hits in answers:
            assert_same_hits(hits, want[query])
    metrics = keyed.get("/metrics").text
    batches = float(metric(metrics, "simsearch_batch_requests_count"))
    requests = float(metric(metrics, "simsearch_batch_requests_sum"))
    assert requests / batches > 1  # some requests shared an encoder call
    assert 'simsearch_requests_total{endpoint="/indexes/{name}/search",status="200"}' in metrics


def metric(text: str, name: str) -> str:
    return next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))


def test_auth_on_and_off(keyed, open_server):
    url = str(keyed.base_url).rstrip("/")
    search = {"queries": ["a dog"], "k": 2}
    assert httpx.post(f"{url}/search", json=search).status_code == 401
    wrong = httpx.post(f"{url}/search", json=search, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "API key" in wrong.json()["detail"]
    for path in ("/indexes", "/metrics", "/docs", "/readyz", "/v1/models"):
        assert httpx.get(f"{url}{path}").status_code == 401
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert keyed.post("/search", json=search).status_code == 200 and keyed.get("/readyz").json()["ready"]
    assert httpx.post(f"{open_server}/search", json=search).status_code == 200
    assert httpx.get(f"{open_server}/docs").status_code == 200
    refused = httpx.post(f"{open_server}/indexes/edits/documents", json={"documents": [{"id": 99, "text": "a dog"}]})
    assert refused.status_code == 403 and "--api-key-file" in refused.json()["detail"]
    assert httpx.post(f"{open_server}/indexes/edits/reload").status_code == 403
    summary = keyed.get("/indexes/docs").json()
    assert (summary["document_count"], summary["embedding_dim"], summary["metadata_fields"]) == (14, 32, ["lang", "n"])


def top_ids(client: httpx.Client, index: str, text: str, k: int = 3) -> list[int]:
    response = client.post(f"/indexes/{index}/search", json={"queries": [text], "k": k})
    assert response.status_code == 200, response.text
    return [h["id"] for h in response.json()["results"][0]["hits"]]


def test_documents_added_and_removed_through_the_api(keyed):
    new = {"id": 500, "text": "the green train rose in the rain", "metadata": {"lang": "de"}}
    added = keyed.post("/indexes/edits/documents", json={"documents": [new]})
    assert added.status_code == 200 and added.json()["document_count"] == 15 and added.json()["updates"] == 1
    assert top_ids(keyed, "edits", new["text"])[0] == 500
    hit = keyed.post("/indexes/edits/search", json={"queries": [new["text"]], "k": 1, "where": {"lang": "de"}}).json()["results"][0]["hits"][0]
    assert (hit["id"], hit["text"], hit["lang"]) == (500, new["text"], "de")
    again = keyed.post("/indexes/edits/documents", json={"documents": [new]})
    assert again.status_code == 400 and "?upsert=true" in again.json()["detail"]
    replaced = keyed.post("/indexes/edits/documents", params={"upsert": "true"}, json={"documents": [{**new, "text": "a slow blue piano"}]})
    assert replaced.status_code == 200 and replaced.json()["document_count"] == 15
    assert top_ids(keyed, "edits", "a slow blue piano")[0] == 500
    missing = keyed.request("DELETE", "/indexes/edits/documents", json={"ids": [500, 12345]})
    assert missing.status_code == 400 and "12345" in missing.json()["detail"]
    removed = keyed.request("DELETE", "/indexes/edits/documents", json={"ids": [500, 1]})
    assert removed.status_code == 200 and removed.json()["document_count"] == 13
    assert not {500, 1} & set(top_ids(keyed, "edits", "a slow blue piano", k=13))


def test_writes_through_the_api_leave_siblings_named_like_their_temporaries(tmp_path, tiny_corpus, tiny_model_dir):
    folder = build(tmp_path / "docs", write_corpus(tmp_path / "docs.jsonl", SENTENCES), tiny_model_dir)
    decoys = Decoys(folder, tiny_corpus, tiny_model_dir)
    with serving(ServeConfig(folders=(folder,), api_key=KEY), Registry.load([folder])) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
            new = {"id": 500, "text": "the green train rose in the rain"}
            for response in (
                client.post("/indexes/docs/documents", json={"documents": [new]}),
                client.post("/indexes/docs/documents", params={"upsert": "true"}, json={"documents": [{**new, "text": "a slow blue piano"}]}),
                client.request("DELETE", "/indexes/docs/documents", json={"ids": [500, 1]}),
            ):
                assert response.status_code == 200, response.text
                decoys.assert_intact()
    assert api.open_index(folder, gpu="off").manifest.document_count == 13


def test_reload_under_a_running_load_loop_loses_no_request(keyed, folders, tmp_path):
    url, failures, done = str(keyed.base_url), [], []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=url, headers=keyed.headers, timeout=30) as http:
            for _ in range(2000):  # bounded; stopped by the event long before
                if stop.is_set():
                    return
                response = http.post("/indexes/reloads/search", json={"queries": ["stocks today"], "k": 3})
                (done if response.status_code == 200 else failures).append(response.status_code)

    loops = [threading.Thread(target=load) for _ in range(3)]
    for thread in loops:
        thread.start()
    try:
        extra = write_corpus(tmp_path / "extra.jsonl", ["the yellow bus is late"], first_id=900)
        api.add(folders["reloads"], extra)  # an external `simsearch index add`: the watcher swaps it in
        deadline = time.monotonic() + 20
        while 900 not in top_ids(keyed, "reloads", "the yellow bus is late") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert top_ids(keyed, "reloads", "the yellow bus is late")[0] == 900
        api.remove(folders["reloads"], [900])
        assert keyed.post("/indexes/reloads/reload").json()["document_count"] == 14  # an explicit reload
        assert 900 not in top_ids(keyed, "reloads", "the yellow bus is late", k=14)
    finally:
        stop.set()
        for thread in loops:
            thread.join(timeout=30)
    assert not failures and len(done) > 10
    assert float(metric(keyed.get("/metrics").text, 'simsearch_index_reloads_total{index="reloads"}')) >= 2


class FlakyEncoder:
    """The real tiny encoder, except that a text with 'explode' raises and one with 'sleepy' takes 1.5 s."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim

    def describe(self):
        return self.inner.describe()

    def encode(self, texts, batch_size=64, show_progress=None):
        if any("explode" in t for t in texts):
            raise RuntimeError("encoder crashed")
        if any("sleepy" in t for t in texts):
            time.sleep(1.5)
        return self.inner.encode(texts, batch_size, show_progress)


def test_failing_or_slow_batches_fail_only_their_requests(folders):
    registry = Registry.load([folders["docs"]], make_encoder=lambda manifest, backend: FlakyEncoder(index_encoder(manifest, backend=backend)))
    with serving(config_for(folders, ("docs",), batch_timeout_s=0.5), registry) as url, httpx.Client(base_url=url, timeout=30) as client:
        crashed = client.post("/search", json={"queries": ["explode the dog"]})  # the encoder still encodes a probe: this request's fault
        assert crashed.status_code == 422 and crashed.json()["detail"] == "the encoder could not process this request's texts (RuntimeError: encoder crashed)"
        slow = client.post("/encode", json={"texts": ["a sleepy cat"]})
        assert slow.status_code == 503 and "timed out" in slow.json()["detail"]
        want = expected_hits(folders["docs"], QUERIES, 3)

        async def disconnect_and_others():
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                async def leaver():
                    with pytest.raises(httpx.ReadTimeout):  # the client gives up mid-request and disconnects
                        await http.post("/search", json={"queries": ["a sleepy dog"]}, timeout=0.2)

                async def other(query: str):
                    await asyncio.sleep(0.05)
                    return (await http.post("/search", json={"queries": [query], "k": 3})).json()

                results = await asyncio.gather(leaver(), *(other(q) for q in QUERIES))
                return results[1:]

        for body, hits in zip(asyncio.run(disconnect_and_others()), want):
            assert_same_hits(body["results"][0]["hits"], hits)
        assert client.post("/search", json={"queries": ["a dog"]}).status_code == 200  # still serving
        assert float(metric(client.get("/metrics").text, "simsearch_failed_batches_total")) >= 2


def test_a_request_that_fails_the_encoder_fails_alone_among_concurrent_searches(folders):
    registry = Registry.load([folders["docs"]], make_encoder=lambda manifest, backend: FlakyEncoder(index_encoder(manifest, backend=backend)))
    queries = (QUERIES * 3)[:18]
    want = expected_hits(folders["docs"], queries, 3)
    with serving(config_for(folders, ("docs",), max_wait_ms=50), registry) as url:

        async def everyone():
            async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=24)) as http:
                bad = [http.post("/search", json={"queries": ["a dog", "explode the cat"], "k": 3}) for _ in range(2)]
                good = [http.post("/search", json={"queries": [q], "k": 3}) for q in queries]
                return await asyncio.gather(*bad, *good)

        responses = asyncio.run(everyone())
        with httpx.Client(base_url=url) as client:
            metrics = client.get("/metrics").text
    for response in responses[:2]:
        assert response.status_code == 422 and "could not process this request's texts" in response.json()["detail"]
    for response, hits in zip(responses[2:], want):
        assert response.status_code == 200, response.text
        assert_same_hits(response.json()["results"][0]["hits"], hits)
    assert float(metric(metrics, "simsearch_batch_requests_sum")) > float(metric(metrics, "simsearch_batch_requests_count"))  # bad and good shared batches


def test_a_lone_surrogate_fails_only_its_own_request(keyed, folders):
    want = expected_hits(folders["docs"], QUERIES, 3)

    async def everyone():
        async with httpx.AsyncClient(base_url=str(keyed.base_url), headers=keyed.headers, timeout=30) as http:
            bad = http.post("/search", content=b'{"queries": ["\\ud800"]}', headers={"content-type": "application/json"})
            return await asyncio.gather(bad, *(http.post("/search", json={"queries": [q], "k": 3}) for q in QUERIES * 3))

    bad, *good = asyncio.run(everyone())
    assert bad.status_code == 422 and "body.queries.0" in bad.json()["detail"]
    for response, hits in zip(good, want * 3):
        assert response.status_code == 200, response.text
        assert_same_hits(response.json()["results"][0]["hits"], hits)


class BrokenEncoder(FlakyEncoder):
    """An encoder that fails every call, a probe text included: the service answers 503."""

    def encode(self, texts, batch_size=64, show_progress=None):
        raise RuntimeError("CUDA error: device lost")


def test_a_broken_encoder_is_503_for_everyone(folders):
    registry = Registry.load([folders["docs"]], make_encoder=lambda manifest, backend: BrokenEncoder(index_encoder(manifest, backend=backend)))
    with serving(config_for(folders, ("docs",)), registry) as url, httpx.Client(base_url=url, timeout=30) as client:
        response = client.post("/search", json={"queries": ["a dog"]})
    assert response.status_code == 503
    assert response.json()["detail"] == "the encoder batch failed (RuntimeError: CUDA error: device lost; a probe text fails too: RuntimeError: CUDA error: device lost); retry"


def test_an_index_with_no_documents_answers_no_hits_like_the_cli(tmp_path, tiny_model_dir):
    folder = build(tmp_path / "empty", write_corpus(tmp_path / "one.jsonl", SENTENCES[:1]), tiny_model_dir)
    api.remove(folder, [1])
    cli = CliRunner().invoke(main, ["query", str(folder), "a dog", "-k", "3", "--json"])
    assert cli.exit_code == 0 and json.loads(cli.stdout) == {"query": "a dog", "hits": []}
    with serving(ServeConfig(folders=(folder,)), Registry.load([folder])) as url, httpx.Client(base_url=url, timeout=30) as client:
        response = client.post("/search", json={"queries": ["a dog", "a cat"], "k": 3})
    assert response.status_code == 200, response.text
    assert response.json() == {"index": "empty", "results": [{"query": "a dog", "hits": []}, {"query": "a cat", "hits": []}]}


def test_a_served_folder_deleted_from_disk_is_reported_by_readyz_and_the_log(tmp_path, tiny_model_dir, caplog):
    folder = build(tmp_path / "doomed", write_corpus(tmp_path / "c.jsonl", SENTENCES), tiny_model_dir)
    config = ServeConfig(folders=(folder,), reload_check_s=0.1)
    with caplog.at_level(logging.INFO, logger="simsearch.serve"), serving(config, Registry.load([folder])) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/readyz").json() == {"ready": True, "indexes": 1, "models": 1, "rerankers": 0, "missing": [], "degraded": []}
        version = Path(os.path.realpath(folder))
        folder.unlink()
        shutil.rmtree(version)
        deadline = time.monotonic() + 10
        while "is gone from disk" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        readyz = client.get("/readyz")
        assert readyz.status_code == 503 and readyz.json()["missing"] == ["doomed"]
        assert client.post("/search", json={"queries": ["a dog"], "k": 1}).status_code == 200  # still answered from memory
    assert f"index doomed: its folder {folder} is gone from disk; still answering from the copy loaded in memory" in caplog.text
    assert caplog.text.count("is gone from disk") == 1  # said once, not every check


def test_slow_request_headers_are_answered_408_and_closed(folders):
    with serving(config_for(folders, ("docs",), header_timeout_s=0.5), registry(folders)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            started, answer = time.monotonic(), b""
            for _ in range(40):  # one header byte every 0.1 s: a slowloris client (at most 4 s)
                try:
                    conn.sendall(b"X")
                except OSError:
                    break
                conn.settimeout(0.1)
                try:
                    chunk = conn.recv(4096)
                except TimeoutError:
                    continue
                answer += chunk
                if not chunk or b"header_timeout" in answer:
                    break
            waited = time.monotonic() - started
        # a normal request on a new connection is unaffected
        with httpx.Client(base_url=url, timeout=5) as client:
            assert client.get("/healthz").status_code == 200
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout") and b'"limit": "header_timeout"' in answer, answer
    assert waited < 3


def test_non_loopback_host_without_a_key_is_refused(folders, tmp_path):
    result = CliRunner().invoke(main, ["serve", str(folders["docs"]), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip() == "Error: --host 0.0.0.0 is not a loopback address: set --api-key-file (or $SIMSEARCH_API_KEY), or pass --insecure to serve it without a key"
    empty = tmp_path / "key"
    empty.write_text("\n")
    result = CliRunner().invoke(main, ["serve", str(folders["docs"]), "--api-key-file", str(empty)])
    assert result.exit_code == 2 and "is empty" in result.stderr
    result = CliRunner().invoke(main, ["serve", str(folders["docs"]), str(folders["docs"])])
    assert result.exit_code == 2 and "distinct names" in result.stderr


@pytest.fixture(scope="module")
def reranking(folders, reranker):
    """A keyed server over docs with the tiny cross-encoder served as "r"; small limits: 40 texts, 60 pairs per request."""
    from server.registry import load_rerankers

    config = config_for(folders, ("docs",), api_key=KEY, max_rerank_pairs=60, max_wait_ms=50, rerankers=(reranker,))
    with serving(config, Registry.load([folders["docs"]]), load_rerankers([reranker])) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
            yield client


def cross_scores(reranker: Path, query: str, texts: list[str]) -> list[float]:
    """What plain sentence-transformers says of each (query, text) pair."""
    from sentence_transformers.cross_encoder import CrossEncoder

    return CrossEncoder(str(reranker)).predict([(query, text) for text in texts]).tolist()


def test_rerank_answers_like_tei_with_the_scores_of_plain_cross_encoder(reranking, reranker):
    query, texts = "a dog on the sofa", SENTENCES[:8]
    want = cross_scores(reranker, query, texts)
    best_first = sorted(range(8), key=lambda i: -want[i])
    full = reranking.post("/rerank", json={"query": query, "texts": texts})
    assert full.status_code == 200 and [hit["index"] for hit in full.json()] == best_first
    assert [hit["score"] for hit in full.json()] == pytest.approx([want[i] for i in best_first], abs=1e-5)
    assert all(set(hit) == {"index", "score"} for hit in full.json())
    top = reranking.post("/rerank", json={"query": query, "texts": texts, "top_n": 3, "return_text": True, "model": "r"}).json()
    assert [(hit["index"], hit["text"]) for hit in top] == [(i, texts[i]) for i in best_first[:3]]
    assert httpx.post(str(reranking.base_url.join("/rerank")), json={"query": query, "texts": texts}).status_code == 401


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"query": "a dog", "texts": ["a cat"] * 41}, 413, "texts: 41 texts exceed the limit of 40 per request"),
        ({"query": "a dog", "texts": ["a cat " * 60]}, 413, "max_text_chars"),
        ({"query": "a dog", "texts": ["a cat", "  "]}, 422, "texts[1]: is empty"),
        ({"query": "", "texts": ["a cat"]}, 422, "query: is empty"),
        ({"query": "a dog", "texts": []}, 422, "body.texts"),
        ({"query": "a dog", "texts": ["a cat"], "top_n": 0}, 422, "body.top_n"),
        ({"query": "a dog", "texts": ["a cat"], "model": "nope"}, 404, "model: no re-ranker named 'nope' (served: "),
        ({"query": "a dog", "documents": ["a cat"]}, 422, "body.documents"),
    ],
)
def test_every_bad_rerank_request_has_its_status(reranking, body, status, fragment):
    response = reranking.post("/rerank", json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"] + str(response.json().get("limit"))


def test_search_reranks_its_first_stage_with_a_served_cross_encoder(reranking, reranker, folders, keyed):
    body = reranking.post("/search", json={"queries": QUERIES[:2], "k": 3, "rerank": "r", "rerank_top": 6}).json()
    for query, result in zip(QUERIES[:2], body["results"]):
        first_stage = expected_hits(folders["docs"], [query], 6)[0]
        want = cross_scores(reranker, query, [h["text"] for h in first_stage])
        order = sorted(range(6), key=lambda i: -want[i])[:3]
        assert [h["id"] for h in result["hits"]] == [first_stage[i]["id"] for i in order]
        assert [h["rerank_score"] for h in result["hits"]] == pytest.approx([want[i] for i in order], abs=1e-5)
        assert [h["score"] for h in result["hits"]] == pytest.approx([first_stage[i]["score"] for i in order], abs=1e-5)
    too_many = reranking.post("/search", json={"queries": QUERIES, "rerank": "r", "rerank_top": 11})
    assert too_many.status_code == 400 and too_many.json()["limit"] == "max_rerank_pairs" and "66 pairs" in too_many.json()["detail"]
    none_served = keyed.post("/search", json={"queries": ["a dog"], "rerank": "r"})
    assert none_served.status_code == 404 and "start the server with --rerank-model DIR" in none_served.json()["detail"]
    kept = reranking.post("/search", json={"queries": QUERIES[:1], "k": 3, "rerank": "r", "rerank_top": 6, "rerank_weight": 0}).json()["results"][0]["hits"]
    assert [h["id"] for h in kept] == [h["id"] for h in keyed.post("/search", json={"queries": QUERIES[:1], "k": 3}).json()["results"][0]["hits"]]
    assert all("rerank_score" in h for h in kept)  # weight 0: the first stage's order, the cross-encoder's scores shown
    bad_weight = reranking.post("/search", json={"queries": ["a dog"], "rerank": "r", "rerank_weight": 2})
    assert bad_weight.status_code == 422 and "rerank_weight" in bad_weight.text
    assert reranking.get("/readyz").json() == {"ready": True, "indexes": 1, "models": 1, "rerankers": 1, "missing": [], "degraded": []}


def test_concurrent_rerank_requests_share_batches_and_get_their_own_scores(folders, reranker):
    from server.registry import load_rerankers

    queries = [f"{a} {b}" for a in ("the dog", "a cat", "stocks", "a red car") for b in ("sleeps", "is fast", "fell", "eats")]
    want = {q: cross_scores(reranker, q, SENTENCES) for q in queries}
    with serving(config_for(folders, ("docs",), max_wait_ms=50), Registry.load([folders["docs"]]), load_rerankers([reranker])) as url:

        async def everyone():
            async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=16)) as http:
                return await asyncio.gather(*(http.post("/rerank", json={"query": q, "texts": SENTENCES}) for q in queries))

        responses = asyncio.run(everyone())
        metrics = httpx.get(f"{url}/metrics").text
    for query, response in zip(queries, responses):
        scores = {hit["index"]: hit["score"] for hit in response.json()}
        assert [scores[i] for i in range(len(SENTENCES))] == pytest.approx(want[query], abs=1e-5)
    assert float(metric(metrics, "simsearch_batch_requests_sum")) == 16
    assert float(metric(metrics, "simsearch_batch_requests_count")) < 16  # some requests shared a cross-encoder call


def test_serve_refuses_a_sentence_encoder_as_rerank_model(folders, tiny_model_dir, reranker):
    result = CliRunner().invoke(main, ["serve", str(folders["docs"]), "--rerank-model", str(tiny_model_dir)])
    assert result.exit_code == 2 and result.stderr.strip().startswith(f"Error: {tiny_model_dir}: not a cross-encoder (a re-ranker) but a sentence encoder")
    result = CliRunner().invoke(main, ["serve", str(folders["docs"]), "--rerank-model", str(reranker), "--rerank-model", str(reranker)])
    assert result.exit_code == 2 and "--rerank-model folders must have distinct names" in result.stderr


def test_sigterm_during_load_lets_in_flight_requests_finish(folders, reranker, tmp_path):
    log = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SIMSEARCH_API_KEY": KEY}
    command = [sys.executable, "-m", "cli", "serve", str(folders["docs"]), "--port", "0", "--max-batch", "8", "--rerank-model", str(reranker), "--rerank-backend", "onnx-int8"]
    with log.open("w") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=sink)
    try:
        deadline = time.monotonic() + 60
        started = "serving docs, re-ranking with r on "
        while started not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        url = log.read_text().split(started)[1].split()[0]
        headers = {"Authorization": f"Bearer {KEY}"}
        queries = [f"{q} {i}" for i in range(40) for q in ("a dog", "the man")][:40]

        async def in_flight():
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
                warm = await asyncio.gather(*(http.get("/readyz") for _ in range(16)))  # 16 open connections: the requests below are sent at once
                assert all(r.json()["ready"] for r in warm)
                requests = [asyncio.ensure_future(http.post("/search", json={"queries": queries, "k": 5})) for _ in range(12)]
                requests += [asyncio.ensure_future(http.post("/rerank", json={"query": "a dog", "texts": queries})) for _ in range(4)]
                await asyncio.sleep(0.15)
                process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*requests)

        responses = asyncio.run(in_flight())
        assert [r.status_code for r in responses] == [200] * 16
        assert all(len(r.json()["results"]) == 40 for r in responses[:12]) and all(len(r.json()) == 40 for r in responses[12:])
        by_index = {hit["index"]: hit["score"] for hit in responses[12].json()}  # scored on onnx-int8: close to torch's
        assert np.abs(np.array([by_index[i] for i in range(40)]) - cross_scores(reranker, "a dog", queries)).max() < 0.05
        assert process.wait(timeout=30) == 0
        assert "stopped" in log.read_text() and "Traceback" not in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_listening_socket_sends_small_responses_at_once():
    """TCP_NODELAY on the listener (inherited by connections): no ~40 ms Nagle/delayed-ACK stall per kept-alive request."""
    import socket

    from server.service import bind, server_settings

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        sock.close()
