"""`simsearch serve --engine ray` against the single-process server: single-query p50/p99 and batched queries/s, 1/2/3 local shards.

The index: the first --docs distinct English sentences of the shared data (STS-B and SICK) in a text file,
built three times with the real command, `simsearch index build --engine ray --shards S` (S = 1, 2, 3; flat,
exact search, so every layout gives the same hits), cached under --cache. The single-process server serves the
S = 1 folder; Ray Serve serves each folder with `--engine ray` (a local Ray started by the server, one replica
per shard). Every server runs as `python -m cli serve` in its own process and is measured the same way, in one
run, by serve_load's load generator (a second process, loopback only, bounded in requests and seconds):

- single query: one client, one query per request, dense mode (the fan-out path; hybrid adds the same BM25 work
  to every layout), p50/p99 over --single requests;
- batched: --clients clients, --batch queries per request, queries/s over --batched requests.

Before measuring, each Ray layout's hits for 50 queries are compared with the single-process server's (ids equal,
scores within 1e-6). A last run serves the 2-shard folder with 2 replicas per shard and kills one replica with
SIGKILL during --kill-requests single-query requests: every request must be answered 200.

    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/ray_serve.py
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

import engine_data
import paths  # noqa: I001  (puts the repository root on sys.path)
from serve_load import queries, run_load, start_server

SHARDS = (1, 2, 3)


def build_folders(cache: Path, docs: int) -> dict[int, Path]:
    """The corpus and its S-shard index folders under `cache`, each built once with `index build --engine ray`."""
    cache.mkdir(parents=True, exist_ok=True)
    corpus = cache / f"corpus-{docs}.txt"
    if not corpus.exists():
        sentences = engine_data.english_sentences(paths.DATA)[:docs]
        corpus.write_text("".join(s.replace("\n", " ") + "\n" for s in sentences), encoding="utf-8")
    folders = {}
    for shards in SHARDS:
        folder = folders[shards] = cache / f"index-{docs}-{shards}"
        if not folder.exists():
            command = [sys.executable, "-m", "cli", "index", "build", str(corpus), "-o", str(folder), "--engine", "ray", "--shards", str(shards), "--type", "flat"]
            started = time.perf_counter()
            subprocess.run(command, cwd=paths.ROOT, env={**os.environ, "PYTHONPATH": str(paths.ROOT)}, check=True, capture_output=True)
            print(f"built {folder.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return folders


def hits(url: str, texts: list[str]) -> list[list[tuple[int, float]]]:
    import httpx

    answer = httpx.post(f"{url}/search", json={"queries": texts, "k": 10, "mode": "dense"}, timeout=120).json()
    return [[(h["id"], h["score"]) for h in row["hits"]] for row in answer["results"]]


def same_hits(got: list[list[tuple[int, float]]], want: list[list[tuple[int, float]]]) -> bool:
    """Ids equal and scores within 1e-6, query by query."""
    return all([i for i, _ in g] == [i for i, _ in w] and np.allclose([s for _, s in g], [s for _, s in w], atol=1e-6, rtol=0) for g, w in zip(got, want))


def replica_pids(folder: Path) -> list[int]:
    """Serve replica processes of a folder's shards (`ray::ServeReplica:APP:DEPLOYMENT`, APP naming the folder)."""
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"]) if " ".join(p.info["cmdline"] or []).startswith("ray::ServeReplica:") and f".{folder.name}." in " ".join(p.info["cmdline"])]


def measure(name: str, folder: Path, extra: list[str], args, texts: list[str], reference: list | None, log: Path) -> tuple[dict, list]:
    """One server: warm-up, the hits of 50 queries, single-query latency, batched throughput."""
    process, url = start_server(folder, 64, log, extra=extra)
    try:
        single = [{"queries": [q], "k": 10, "mode": "dense"} for q in texts]
        batched = [{"queries": texts[i : i + args.batch], "k": 10, "mode": "dense"} for i in range(0, len(texts) - args.batch, args.batch)]
        run_load(url, "/search", single[:30], 1, 30, 30)  # warm-up
        found = hits(url, texts[:50])
        one = run_load(url, "/search", single, 1, args.single, args.duration)
        many = run_load(url, "/search", batched, args.clients, args.batched, args.duration)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    row = {
        "server": name, "shards": len(json.loads((folder / "manifest.json").read_text()).get("shards", [])) or 1,
        "identical_hits": None if reference is None else same_hits(found, reference),
        "p50_ms": one["p50_ms"], "p99_ms": one["p99_ms"], "single_ok": one["ok"], "batched_qps": many["rps"] * args.batch,
        "errors": {**one["errors"], **many["errors"]},
    }
    print(json.dumps(row), flush=True)
    return row, found


def kill_run(folder: Path, args, texts: list[str], log: Path) -> dict:
    """2 replicas per shard; one is killed (SIGKILL) once a third of the requests were sent: how many failed."""
    process, url = start_server(folder, 64, log, extra=["--engine", "ray", "--replicas", "2"])
    try:
        single = [{"queries": [q], "k": 10, "mode": "dense"} for q in texts]
        run_load(url, "/search", single[:20], 1, 20, 30)
        victims = replica_pids(folder)
        if not victims:
            raise SystemExit(f"no Serve replica of {folder.name} found to kill")
        timer = threading.Timer(args.kill_after, lambda: os.kill(victims[0], signal.SIGKILL))
        timer.start()
        result = run_load(url, "/search", single, 4, args.kill_requests, 60)
        timer.join()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    row = {"server": "Ray Serve, 2 replicas per shard, one killed", "replicas_seen": len(victims), "requests": args.kill_requests, "answered": result["ok"],
           "failed": sum(result["errors"].values()), "errors": result["errors"], "p99_ms": result["p99_ms"]}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=paths.default_cache() / "ray-serve", help="corpus and index folders (built once)")
    parser.add_argument("--docs", type=int, default=20_000, help="sentences in the index")
    parser.add_argument("--single", type=int, default=300, help="single-query requests per server")
    parser.add_argument("--batched", type=int, default=60, help="batched requests per server")
    parser.add_argument("--batch", type=int, default=32, help="queries per batched request")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients of the batched run")
    parser.add_argument("--duration", type=float, default=60.0, help="longest run in seconds")
    parser.add_argument("--kill-requests", type=int, default=300, help="requests of the replica-kill run (0: skip it)")
    parser.add_argument("--kill-after", type=float, default=1.0, help="seconds into the kill run before the replica is killed")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    folders = build_folders(args.cache, args.docs)
    texts = queries(2000)
    rows, reference = [], None
    for name, shards, extra in [("single process", 1, []), *((f"Ray Serve, {s} shard{'s' if s > 1 else ''}", s, ["--engine", "ray"]) for s in SHARDS)]:
        row, found = measure(name, folders[shards], extra, args, texts, reference, args.cache / f"serve-{name.replace(' ', '-').replace(',', '')}.log")
        reference = reference or found
        rows.append(row)
    killed = kill_run(folders[2], args, texts, args.cache / "serve-kill.log") if args.kill_requests else None
    print_table(rows, killed)
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "kill": killed}, indent=2) + "\n")


def print_table(rows: list[dict], killed: dict | None) -> None:
    base = rows[0]
    print("\n| server | shards | hits = single process | p50 ms | p99 ms | p50 over single process | batched queries/s | vs single process |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        same = "-" if r["identical_hits"] is None else ("yes" if r["identical_hits"] else "NO")
        print(f"| {r['server']} | {r['shards']} | {same} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['p50_ms'] - base['p50_ms']:+.1f} ms "
              f"| {r['batched_qps']:.0f} | {r['batched_qps'] / base['batched_qps']:.2f}x |")
    if killed:
        print(f"\nreplica killed during {killed['requests']} requests (4 clients): {killed['answered']} answered, {killed['failed']} failed, p99 {killed['p99_ms']:.0f} ms")


if __name__ == "__main__":
    main()
