"""`simsearch serve --engine ray`: every shard a Ray Serve deployment on a local Ray, behind the same HTTP API as one process.

Real Ray, real Serve replicas, a real uvicorn on 127.0.0.1; a replica is killed with SIGKILL. Skipped without the
`distributed` extra. One local Ray for the module (started by the first Ray build, stopped with the deployer).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from click.testing import CliRunner

from cli import main
from common.corpus import CorpusSpec
from conftest import ROOT, TINY_WORDS
from errors import DataError
from index.build import BuildConfig
from server.config import ServeConfig
from server.registry import Registry
from simsearch import api
from test_serve import KEY, serving

pytest.importorskip("ray.serve")

from distributed.engine import RayOptions  # noqa: E402
from distributed.serving import ShardDeployer  # noqa: E402

QUERIES = ["a man playing guitar", "the dog sleeps", "stocks fell today", "a red car is fast", "rain in the city", "a cat eating bread"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """300 distinct sentences of the tiny model's words, with a metadata field to filter on."""
    rng = np.random.default_rng(11)
    sentences: dict[str, None] = {}
    while len(sentences) < 300:
        sentences[" ".join(rng.choice(TINY_WORDS, size=6))] = None
    path = tmp_path_factory.mktemp("ray-serve") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t, "parity": "odd" if i % 2 else "even"}) + "\n" for i, t in enumerate(sentences)))
    return path


@pytest.fixture(scope="module")
def folders(corpus, tiny_model_dir) -> dict[str, Path]:
    """flat (one process, unsharded), two (flat, 2 shards) and three (sq8 with float rescoring, 3 shards), the last two built on Ray."""
    root = corpus.parent
    spec = CorpusSpec(corpus, id_column="id", format="jsonl")
    quiet = dict(show_progress=False, chunk_size=64)
    api.build(spec, root / "flat", BuildConfig(**quiet), model=str(tiny_model_dir))
    api.build(spec, root / "two", BuildConfig(**quiet), model=str(tiny_model_dir), ray_options=RayOptions(workers=1, shards=2))
    api.build(spec, root / "three", BuildConfig(index_type="sq8", rescore=4, **quiet), model=str(tiny_model_dir), ray_options=RayOptions(workers=1, shards=3))
    return {name: root / name for name in ("flat", "two", "three")}


@pytest.fixture(scope="module")
def deployer(folders):
    """Two replicas per shard on the local Ray the builds started; stopping it stops that Ray."""
    deployer = ShardDeployer(replicas=2)
    yield deployer
    deployer.stop()


def config(folders: dict[str, Path], **kwargs) -> ServeConfig:
    return ServeConfig(folders=(folders["two"], folders["three"]), **({"max_body": 16_384, "max_queries": 40, "max_text_chars": 300} | kwargs))


@pytest.fixture(scope="module")
def ray_server(folders, deployer):
    """The Ray-engine server (API key set) over the 2- and 3-shard folders; yields a client that sends the key."""
    registry = Registry.load([folders["two"], folders["three"]], deployer=deployer)
    with serving(config(folders, api_key=KEY, engine="ray", replicas=2), registry) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
            yield client


@pytest.fixture(scope="module")
def local_server(folders):
    """The single-process server over the same folders."""
    with serving(config(folders), Registry.load([folders["two"], folders["three"], folders["flat"]])) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client


def search(client: httpx.Client, index: str, body: dict) -> list[list[dict]]:
    response = client.post(f"/indexes/{index}/search", json=body)
    assert response.status_code == 200, response.text
    return [row["hits"] for row in response.json()["results"]]


BODIES = [
    {"queries": QUERIES, "k": 10, "mode": "dense"},
    {"queries": QUERIES[:3], "k": 7, "mode": "dense", "where": {"parity": "odd"}},
    {"queries": QUERIES, "k": 5, "mode": "hybrid"},
    {"queries": QUERIES[:2], "k": 300, "mode": "dense"},
]


@pytest.mark.parametrize("index", ["two", "three"])
def test_hits_equal_the_single_process_server(ray_server, local_server, index):
    for body in BODIES:
        got, want = search(ray_server, index, body), search(local_server, index, body)
        assert [[h["id"] for h in row] for row in got] == [[h["id"] for h in row] for row in want], body
        assert np.abs(np.array([h["score"] for row in got for h in row]) - [h["score"] for row in want for h in row]).max() <= 1e-6
        assert got == [[{**h, "score": g["score"]} for h, g in zip(row_w, row_g)] for row_w, row_g in zip(want, got)]  # texts, metadata, ranks
    if index == "three":  # rescoring off and on again through the shards
        off = {"queries": QUERIES, "k": 10, "mode": "dense", "rescore": 0}
        assert [[h["id"] for h in r] for r in search(ray_server, index, off)] == [[h["id"] for h in r] for r in search(local_server, index, off)]


def test_two_shards_find_what_the_unsharded_index_finds(ray_server, local_server):
    body = {"queries": QUERIES, "k": 10, "mode": "dense"}
    got, want = search(ray_server, "two", body), search(local_server, "flat", body)
    assert [[h["id"] for h in row] for row in got] == [[h["id"] for h in row] for row in want]
    assert np.allclose([h["score"] for row in got for h in row], [h["score"] for row in want for h in row], atol=1e-5)


@pytest.mark.parametrize(("method", "path", "body", "status", "fragment"), [
    ("post", "/indexes/two/search", {"queries": ["a dog"], "k": 1001}, 400, "k: 1001 exceeds the limit of 1000"),
    ("post", "/indexes/two/search", {"queries": ["a dog"] * 41, "k": 3}, 400, "queries: 41 texts exceed the limit of 40"),
    ("post", "/indexes/two/search", {"queries": ["a" * 301], "k": 3}, 400, "queries[0]: 301 characters exceed the limit of 300"),
    ("post", "/indexes/two/search", {"queries": ["a dog"], "k": 3, "where": {"colour": "red"}}, 400, "unknown field(s) colour"),
    ("post", "/indexes/two/search", {"queries": ["a dog"], "k": 3, "rescore": 4}, 400, "rescore: index 'two' keeps no float vectors"),
    ("post", "/indexes/nope/search", {"queries": ["a dog"]}, 404, "no index named 'nope'"),
    ("post", "/indexes/two/documents", {"documents": [{"id": 1000, "text": "a dog"}]}, 405, "writes are not served with --engine ray"),
    ("delete", "/indexes/two/documents", {"ids": [1]}, 405, "writes are not served with --engine ray"),
])
def test_limits_and_errors_answer_as_in_one_process(ray_server, method, path, body, status, fragment):
    response = ray_server.request(method.upper(), path, json=body)
    assert response.status_code == status and fragment in response.json()["detail"], response.text


def test_auth_body_limit_and_readiness(ray_server):
    assert httpx.post(f"{ray_server.base_url}/search", json={"queries": ["a dog"]}).status_code == 401
    assert ray_server.post("/search", content=b"{" + b" " * 20_000 + b"}", headers={"content-type": "application/json"}).status_code == 413
    ready = ray_server.get("/readyz")
    assert ready.status_code == 200 and ready.json()["degraded"] == [] and ready.json()["indexes"] == 2
    assert ray_server.get("/indexes/three").json()["document_count"] == 300


def replica_pids(app_part: str) -> list[int]:
    """Processes of Serve replicas whose title names `app_part` (`ray::ServeReplica:APP:DEPLOYMENT`)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        title = " ".join(process.info["cmdline"] or [])
        if title.startswith("ray::ServeReplica:") and app_part in title:
            found.append(process.pid)
    return found


def test_a_killed_replica_loses_no_request(ray_server, local_server, deployer):
    """300 searches from 4 threads (bounded at 60 s); one replica of shard-000 is killed after the 40th is answered."""
    body = {"queries": QUERIES[:2], "k": 10, "mode": "dense"}
    want = search(local_server, "two", body)
    victims = replica_pids(f"{deployer.deployed['two'][0]}:shard-000")
    assert len(victims) == 2
    answered, deadline, killed = [], time.monotonic() + 60, threading.Event()

    def client(n: int) -> list[tuple[int, object]]:
        out = []
        with httpx.Client(base_url=ray_server.base_url, headers=ray_server.headers, timeout=60) as http:
            for _ in range(n):
                if time.monotonic() > deadline:
                    break
                response = http.post("/indexes/two/search", json=body)
                out.append((response.status_code, response.json()))
                answered.append(1)
                if len(answered) >= 40 and not killed.is_set():
                    killed.set()
                    os.kill(victims[0], signal.SIGKILL)
        return out

    with ThreadPoolExecutor(4) as pool:
        results = [r for part in pool.map(client, [75] * 4) for r in part]
    assert killed.is_set() and len(results) == 300
    assert [status for status, _ in results] == [200] * 300
    assert all([row["hits"] for row in answer["results"]] == want for _, answer in results)


def test_reload_deploys_the_folder_again_and_answers_the_same(ray_server, local_server, deployer):
    body = {"queries": QUERIES, "k": 10, "mode": "dense"}
    before = list(deployer.deployed["three"])
    assert ray_server.post("/indexes/three/reload").status_code == 200
    assert deployer.deployed["three"] != before and len(deployer.deployed["three"]) == 3
    assert search(ray_server, "three", body) == search(local_server, "three", body)


def test_an_index_add_on_disk_is_deployed_by_the_automatic_reload(corpus, deployer, tiny_model_dir, tmp_path):
    """The documented write path: `index add` on the (unsharded) folder; the server sees the new manifest and deploys it."""
    folder, extra = tmp_path / "one", tmp_path / "extra.jsonl"
    api.build(CorpusSpec(corpus, id_column="id", format="jsonl"), folder, BuildConfig(show_progress=False), model=str(tiny_model_dir))
    extra.write_text(json.dumps({"id": 5000, "text": "green sun green sun green sun", "parity": "even"}) + "\n")
    registry = Registry.load([folder], deployer=deployer)
    with serving(ServeConfig(folders=(folder,), engine="ray", reload_check_s=0.2), registry) as url, httpx.Client(base_url=url, timeout=60) as http:
        first = list(deployer.deployed["one"])
        body = {"queries": ["green sun green sun green sun"], "k": 1, "mode": "dense"}
        assert search(http, "one", body)[0][0]["id"] != 5000
        api.add(folder, CorpusSpec(extra, id_column="id", format="jsonl"))
        deadline = time.monotonic() + 60
        while http.get("/indexes/one").json()["document_count"] != 301 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert search(http, "one", body)[0][0]["id"] == 5000
        assert deployer.deployed["one"] != first


def test_readyz_names_a_shard_without_replica_until_serve_restarts_it(folders, deployer):
    """One replica per shard: killed, /readyz is 503 naming it; a search sent meanwhile waits and is answered; then ready again."""
    single = ShardDeployer(replicas=1, prefix=f"{deployer.prefix}-single")
    single.started = True  # the module's Ray and Serve are running
    registry = Registry.load([folders["two"]], deployer=single)
    with serving(ServeConfig(folders=(folders["two"],), engine="ray"), registry) as url, httpx.Client(base_url=url, timeout=90) as http:
        body = {"queries": QUERIES[:1], "k": 5, "mode": "dense"}
        before = http.post("/search", json=body).json()
        (victim,) = replica_pids(f"{single.deployed['two'][1]}:shard-001")
        os.kill(victim, signal.SIGKILL)
        deadline, seen = time.monotonic() + 30, None
        while time.monotonic() < deadline and seen is None:
            ready = http.get("/readyz")
            if ready.json()["degraded"]:
                seen = ready
            time.sleep(0.05)
        assert seen is not None and seen.status_code == 503 and seen.json()["degraded"] == ["two/shard-001"]
        assert http.post("/search", json=body).json() == before  # retried until the restarted replica answers
        deadline = time.monotonic() + 30
        while http.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert http.get("/readyz").json() == {**seen.json(), "ready": True, "degraded": []}
    single.delete([app for apps in single.deployed.values() for app in apps])


def test_a_shard_that_cannot_load_is_one_error_naming_it(folders, deployer, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(folders["two"], bad)
    broken = bad / "shard-001" / "vectors.faiss"
    broken.write_bytes(b"\0" * broken.stat().st_size)  # same size: only the replica reading it can tell
    with pytest.raises(DataError) as error:
        Registry.load([bad], deployer=deployer)
    message = str(error.value)
    assert message.startswith(f"{bad}: a shard did not start on Ray Serve: shard-001: ") and "cannot be read by FAISS" in message
    assert len(message.splitlines()) == 1 and "bad" not in deployer.pending and "bad" not in deployer.deployed


def test_bad_engine_options_are_one_line(folders, tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["serve", str(tmp_path / "empty"), "--engine", "ray"])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1 and "manifest" in result.stderr, result.stderr
    result = CliRunner().invoke(main, ["serve", str(folders["two"]), "--engine", "ray", "--replicas", "0"])
    assert result.exit_code == 2 and "--replicas" in result.stderr
    result = CliRunner().invoke(main, ["serve", str(folders["two"]), "--replicas", "2"])
    assert result.exit_code == 2 and "--address and --replicas only apply with --engine ray" in result.stderr


def test_sigterm_drains_in_flight_searches_and_exits_0(folders, deployer, tmp_path):
    """The real command in a subprocess joining the module's Ray by --address: searches sent before SIGTERM are answered, then
    exit 0, and its Serve applications are gone from the cluster (which keeps running)."""
    import ray
    from ray import serve

    log = tmp_path / "serve.log"
    address = ray.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "cli", "serve", str(folders["two"]), "--engine", "ray", "--address", address, "--port", "0"]

    def its_apps() -> list[str]:
        return [app for app in serve.status().applications if not app.startswith(deployer.prefix)]
    with log.open("w") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=sink)
    try:
        deadline, started = time.monotonic() + 120, "serving two (2 shard deployments on Ray Serve) on "
        while started not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        url = log.read_text().split(started)[1].split()[0]
        assert len(its_apps()) == 2
        body = {"queries": QUERIES * 6, "k": 10, "mode": "dense"}

        async def in_flight():
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                want = (await http.post("/search", json=body)).json()
                await asyncio.gather(*(http.get("/readyz") for _ in range(8)))  # 8 open connections: the searches below go at once
                requests = [asyncio.ensure_future(http.post("/search", json=body)) for _ in range(8)]
                await asyncio.sleep(0.1)
                process.send_signal(signal.SIGTERM)
                return want, await asyncio.gather(*requests)

        want, responses = asyncio.run(in_flight())
        assert [r.status_code for r in responses] == [200] * 8 and all(r.json() == want for r in responses)
        assert process.wait(timeout=60) == 0
        assert "stopped" in log.read_text() and "Traceback" not in log.read_text()
        deadline = time.monotonic() + 30
        while its_apps() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert its_apps() == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
