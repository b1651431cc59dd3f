"""`simsearch serve` under load: p50/p99 latency, requests/s and mean batch size at 1/8/32 clients, batching on vs off.

The index: >= 100k documents. The shared English sentences (STS-B and SICK, 20,501 distinct)
are encoded once with the bundled default model (all-MiniLM-L6-v2) and lightly perturbed
into more documents (a word dropped, two neighbours swapped, lower-cased without
punctuation, a word repeated): 101,739 distinct texts. Encoding all of them takes too long
on 2 shared cores, so a perturbed text's vector is its original's vector plus small
Gaussian noise, renormalized (cosine ~0.95 to the original), not its own encoding. The
vectors are cached under --cache and the index is built from them by the ordinary
`build_index` path (--type: flat, exact search, by default) through an encoder that answers from the
cache. Queries are real encoder calls on texts that are not in the corpus. The server runs as `python -m cli serve` in its own
process; the load generator is a second process (asyncio + httpx), loopback only,
single-query requests, a fixed request count per client and at most --duration s per run.

Reference in the same run: infinity-emb (dynamic batching), when --infinity-url points
at one serving the same model; start it in a throwaway venv:

    python3 -m venv /tmp/infinity-venv
    /tmp/infinity-venv/bin/pip install torch==2.13.0 'infinity-emb[server,torch]'
    /tmp/infinity-venv/bin/infinity_emb v2 --model-id "$(python -c 'from embedder.model_files import default_model_path as p; print(p())')" \\
        --engine torch --device cpu --host 127.0.0.1 --port 7997

    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/serve_load.py --infinity-url http://127.0.0.1:7997
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import engine_data
import paths  # noqa: I001  (puts the repository root on sys.path)
PERTURBATIONS = ("original", "drop_word", "swap_words", "lower_no_punct", "repeat_word", "drop_first")
NOISE = 0.016  # per-dimension noise on a perturbed text's vector (384 dims: cosine ~0.95 to the original)


def perturb(sentence: str, how: str, rng: random.Random) -> str:
    """One light, deterministic-for-a-seed change of a sentence (see PERTURBATIONS)."""
    words = sentence.split()
    if how == "original" or len(words) < 3:
        return sentence
    i = rng.randrange(len(words) - 1)
    if how == "drop_word":
        return " ".join(words[:i] + words[i + 1 :])
    if how == "swap_words":
        return " ".join(words[:i] + [words[i + 1], words[i]] + words[i + 2 :])
    if how == "lower_no_punct":
        return re.sub(r"[^\w\s]", "", sentence).lower()
    if how == "repeat_word":
        return " ".join(words[: i + 1] + words[i:])
    return " ".join(words[1:])


def make_corpus(path: Path, docs: int) -> int:
    """Write >= `docs` distinct documents (JSONL: id, text, variant); returns how many."""
    rng, seen, rows, sentences = random.Random(0), set(), [], engine_data.english_sentences(paths.DATA)
    for how in PERTURBATIONS:
        for sentence in sentences:
            text = perturb(sentence, how, rng)
            if text not in seen:
                seen.add(text)
                rows.append({"id": len(rows) + 1, "text": text, "variant": how, "of": sentence})
        if len(rows) >= docs:
            break
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


class CachedEncoder:
    """The default model's encoder, answering from vectors cached for known texts (each text encoded once, ever)."""

    def __init__(self, inner, texts: list[str], vectors: np.ndarray) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.rows = {t: i for i, t in enumerate(texts)}
        self.vectors = vectors

    def describe(self):
        return self.inner.describe()

    def encode(self, texts, batch_size=64, show_progress=None):
        if all(t in self.rows for t in texts):
            return self.vectors[[self.rows[t] for t in texts]]
        return self.inner.encode(texts, batch_size, show_progress)


def prepare(cache: Path, docs: int, index_type: str) -> Path:
    """The benchmark index of `index_type` under `cache` (corpus, cached vectors, index folder), made once."""
    from common.corpus import CorpusSpec, read_corpus
    from embedder.backends import load_encoder
    from index.build import BuildConfig
    from simsearch import api

    cache.mkdir(parents=True, exist_ok=True)
    corpus, vectors_path, folder = cache / "corpus.jsonl", cache / "vectors.npy", cache / f"index-{index_type}"
    if not corpus.exists():
        print(f"corpus: {make_corpus(corpus, docs)} documents", file=sys.stderr)
    if vectors_path.exists() and folder.exists():
        return folder
    docs = list(read_corpus(CorpusSpec(corpus)))
    texts = [d.text for d in docs]
    encoder = load_encoder()
    if not vectors_path.exists():
        originals = list(dict.fromkeys(d.metadata["of"] for d in docs))
        started = time.perf_counter()
        encoded = encoder.encode(originals, 64, show_progress=True)
        print(f"encoded {len(originals)} sentences in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        row = {text: i for i, text in enumerate(originals)}
        vectors = encoded[[row[d.metadata["of"]] for d in docs]]
        noisy = np.array([d.metadata["variant"] != "original" for d in docs])
        vectors[noisy] += np.random.default_rng(0).normal(0, NOISE, size=(int(noisy.sum()), vectors.shape[1])).astype(np.float32)
        np.save(vectors_path, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    if not folder.exists():
        api.build(corpus, folder, BuildConfig(index_type=index_type, show_progress=True), encoder=CachedEncoder(encoder, texts, np.load(vectors_path)))
    return folder


def queries(n: int = 2000) -> list[str]:
    """Query texts: base sentences with their last word dropped (not themselves documents, mostly)."""
    rng = random.Random(1)
    picked = rng.sample(engine_data.english_sentences(paths.DATA), n)
    return [" ".join(s.split()[:-1]) or s for s in picked]


# --- the load generator (runs in its own process) -------------------------------------------
async def generate(url: str, path: str, bodies: list[dict], concurrency: int, requests: int, duration: float, headers: dict) -> dict:
    """`concurrency` clients, each sending its share of `requests` one after another (stops at `duration` s)."""
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + duration

    async def client(worker: int, http) -> None:
        for i in range(worker, requests, concurrency):
            if time.perf_counter() > deadline:
                return
            started = time.perf_counter()
            try:
                response = await http.post(path, json=bodies[i % len(bodies)])
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                    continue
                key = str(response.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            errors[key] = errors.get(key, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60, headers=headers) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(w, http) for w in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"latencies": latencies, "elapsed": elapsed, "errors": errors}


def run_load(url: str, path: str, bodies: list[dict], concurrency: int, requests: int, duration: float) -> dict:
    """Run the generator in a second process; returns p50/p99 (ms), requests/s and errors."""
    job = {"url": url, "path": path, "bodies": bodies, "concurrency": concurrency, "requests": requests, "duration": duration}
    done = subprocess.run([sys.executable, __file__, "--load-job", "-"], input=json.dumps(job), capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    lat = np.array(result["latencies"]) * 1000
    return {
        "ok": len(lat), "errors": result["errors"], "rps": len(lat) / result["elapsed"],
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"), "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
    }


# --- the server under test -------------------------------------------------------------------
def start_server(folder: Path, max_batch: int, log: Path, backend: str | None = None, extra: Sequence[str] = ()) -> tuple[subprocess.Popen, str]:
    """`python -m cli serve FOLDER --port 0 ...` (+ `extra` options); returns the process and its URL once it serves."""
    env = {**os.environ, "PYTHONPATH": str(paths.ROOT)}
    command = [sys.executable, "-m", "cli", "serve", str(folder), "--port", "0", "--max-batch", str(max_batch), *extra]
    with log.open("w") as sink:
        process = subprocess.Popen(command + (["--backend", backend] if backend else []), cwd=paths.ROOT, env=env, stderr=sink)
    deadline = time.monotonic() + 300
    while not (found := re.search(r"serving .* on (http://\S+)", log.read_text())) and time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    if not found:
        raise SystemExit(f"server did not start in 300 s: {log.read_text()[-2000:]}")
    return process, found.group(1)


def batch_totals(url: str) -> tuple[float, float]:
    """(requests batched, batches) so far, from /metrics."""
    import httpx

    text = httpx.get(f"{url}/metrics").text
    value = lambda name: float(next(l.split()[-1] for l in text.splitlines() if l.startswith(name + " ")))  # noqa: E731
    return value("simsearch_batch_requests_sum"), value("simsearch_batch_requests_count")


def measure(url: str, path: str, bodies: list[dict], clients: int, requests: int, duration: float) -> dict:
    run_load(url, path, bodies[:20], min(clients, 4), 20, 10)  # warm-up
    before = batch_totals(url)
    row = run_load(url, path, bodies, clients, requests, duration)
    after = batch_totals(url)
    row["mean_batch"] = (after[0] - before[0]) / max(after[1] - before[1], 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=paths.ROOT / "build" / "serve-bench", help="corpus, cached vectors and index (made once)")
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--requests", type=int, default=1200, help="requests per run (1 client: a quarter)")
    parser.add_argument("--duration", type=float, default=30.0, help="longest run in seconds")
    parser.add_argument("--infinity-url", default=None, help="a running infinity-emb serving the same model (its /embeddings)")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--type", default="flat", help="index type (flat: exact search; auto measures the types and picks the fastest at the target recall)")
    parser.add_argument("--backend", default=None, help="serve with this encoder backend (default: the index's own, torch)")
    parser.add_argument("--load-job", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_job:
        job = json.loads(sys.stdin.read())
        print(json.dumps(asyncio.run(generate(job["url"], job["path"], job["bodies"], job["concurrency"], job["requests"], job["duration"], {}))))
        return
    folder = prepare(args.cache, args.docs, args.type)
    texts = queries()
    search_bodies = [{"queries": [q], "k": 10} for q in texts]
    clients = [int(c) for c in args.clients.split(",")]
    rows = []
    for max_batch in (64, 1):
        process, url = start_server(folder, max_batch, args.cache / f"serve-{max_batch}.log", args.backend)
        try:
            for c in clients:
                row = measure(url, "/search", search_bodies, c, args.requests // 4 if c == 1 else args.requests, args.duration)
                rows.append({"endpoint": "/search", "max_batch": max_batch, "clients": c, **row})
                print(json.dumps(rows[-1]), flush=True)
            if max_batch == 64:
                row = measure(url, "/encode", [{"texts": [q]} for q in texts], 32, args.requests, args.duration)
                rows.append({"endpoint": "/encode", "max_batch": max_batch, "clients": 32, **row})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    if args.infinity_url:
        from embedder.model_files import default_model_path

        bodies = [{"input": [q], "model": str(default_model_path())} for q in texts]
        run_load(args.infinity_url, "/embeddings", bodies[:20], 4, 20, 10)
        row = run_load(args.infinity_url, "/embeddings", bodies, 32, args.requests, args.duration)
        rows.append({"endpoint": "infinity /embeddings", "max_batch": None, "clients": 32, "mean_batch": None, **row})
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


def print_table(rows: list[dict]) -> None:
    print("\n| endpoint | --max-batch | clients | requests | p50 ms | p99 ms | requests/s | mean batch | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        batch = f"{r['mean_batch']:.1f}" if r["mean_batch"] is not None else "-"
        print(f"| {r['endpoint']} | {r['max_batch'] or '-'} | {r['clients']} | {r['ok']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['rps']:.0f} | {batch} | {r['errors'] or 0} |")
    by = {(r["endpoint"], r["max_batch"], r["clients"]): r["rps"] for r in rows}
    if ("/search", 1, 32) in by and ("/search", 64, 32) in by:
        print(f"\nbatching at 32 clients: {by[('/search', 64, 32)] / by[('/search', 1, 32)]:.2f}x the throughput of --max-batch 1")
    infinity = next((r["rps"] for r in rows if r["endpoint"].startswith("infinity")), None)
    if infinity and ("/encode", 64, 32) in by:
        print(f"/encode vs infinity-emb /embeddings at 32 clients: {by[('/encode', 64, 32)] / infinity:.2f}x")


if __name__ == "__main__":
    main()
