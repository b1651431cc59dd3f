"""Scale-out simulation for docs/scaling.md: the same corpus built by the local engine and by Ray (local Ray, N workers, S shards).

Corpus: real English sentences (STS-B and SICK from ../shared/data), repeated with a light perturbation
(two adjacent words swapped and a " #k" copy number appended) until --sentences; the first pass is verbatim.
Measures encode sentences/s (local, and Ray in total and per worker), build time, peak RSS of each Ray
encoder actor, shard sizes, and query latency (one query at a time, k=10) over the shards vs one index.

    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/ray_scale.py --data-dir ../shared/data --sentences 20000
    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/ray_scale.py --data-dir ../shared/data --sentences 1000000 --type ivfpq --backend onnx-int8  # the 1/1000 run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

import engine_data  # noqa: F401  (puts the repository root on sys.path)
from common.sts_data import load_sts
from index.build import BuildConfig
from simsearch import api


def real_sentences(data_dir: Path) -> list[str]:
    """Distinct sentences of STS-B (all splits) and SICK, in file order."""
    seen: dict[str, None] = {}
    sources = [(data_dir / "stsb-en" / "stsbenchmark.tsv.gz", split) for split in ("train", "dev", "test")]
    sources += [(data_dir / "sick" / name, None) for name in ("SICK_train.txt", "SICK_trial.txt")]
    for path, split in sources:
        pairs = load_sts(path, split)
        for text in (*pairs.sentences1, *pairs.sentences2):
            seen.setdefault(" ".join(text.split()), None)
    return list(seen)


def corpus_file(sentences: list[str], n: int, path: Path, seed: int = 0) -> Path:
    """`n` lines: the real sentences, then perturbed copies (adjacent-word swap + ' #k')."""
    rng = np.random.default_rng(seed)
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            base, copy = sentences[i % len(sentences)], i // len(sentences)
            if copy:
                words = base.split()
                j = int(rng.integers(0, max(len(words) - 1, 1)))
                words[j : j + 2] = words[j : j + 2][::-1]
                base = " ".join(words) + f" #{copy}"
            out.write(base + "\n")
    return path


class PeakRss(threading.Thread):
    """Samples the RSS of every Ray encoder actor process twice a second; keeps each one's peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks: dict[int, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            for proc in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                if "EncodeBlocks" in " ".join(proc.info["cmdline"] or []) and proc.info["memory_info"]:
                    self.peaks[proc.info["pid"]] = max(self.peaks.get(proc.info["pid"], 0), proc.info["memory_info"].rss)


def query_latency_ms(folder: Path, queries: np.ndarray) -> float:
    """Median ms of one k=10 search per query vector (vectors precomputed: search only)."""
    index = api.open_index(folder, gpu="off")
    times = []
    for row in queries:
        started = time.perf_counter()
        index.search_ids(row[None, :], 10)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--sentences", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--type", default="ivf", help="index type of both builds")
    parser.add_argument("--backend", default="torch", help="encoding backend of both builds (torch, onnx, onnx-int8)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    import ray

    from distributed.engine import RayOptions

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = corpus_file(real_sentences(args.data_dir), args.sentences, tmp / "corpus.txt")
        config = BuildConfig(index_type=args.type, show_progress=False)
        started = time.perf_counter()
        local = api.build(corpus, tmp / "local", config, backend=args.backend)
        local_seconds = time.perf_counter() - started

        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        monitor = PeakRss()
        monitor.start()
        started = time.perf_counter()
        remote = api.build(corpus, tmp / "ray", config, backend=args.backend, ray_options=RayOptions(workers=args.workers, shards=args.shards))
        ray_seconds = time.perf_counter() - started
        monitor.stop.set()
        ray.shutdown()

        queries = api.open_index(tmp / "local", gpu="off").encoder.encode([f"query {i} about a man playing music" for i in range(200)])
        results = {
            "sentences": args.sentences, "backend": args.backend, "workers": args.workers, "shards": args.shards, "type": args.type,
            "local_build_s": round(local_seconds, 1), "local_docs_per_s": round(args.sentences / local_seconds, 1),
            "ray_build_s": round(ray_seconds, 1), "ray_encode_s": remote.engine["encode_seconds"], "ray_docs_per_s": remote.engine["docs_per_second"],
            "ray_docs_per_s_per_worker": round(remote.engine["docs_per_second"] / args.workers, 1),
            "ray_vs_local_throughput": round(remote.engine["docs_per_second"] / (args.sentences / local_seconds), 3),
            "ray_assemble_s": round(ray_seconds - remote.engine["encode_seconds"], 1),
            "peak_rss_per_worker_mb": sorted(round(v / 2**20) for v in monitor.peaks.values()),
            "shards_bytes": [s["bytes"] for s in remote.shards], "shards_docs": [s["documents"] for s in remote.shards],
            "local_index_bytes": (tmp / "local" / "vectors.faiss").stat().st_size,
            "recall_at_10_local": local.quality["recall_at_10"], "recall_at_10_ray": remote.quality["recall_at_10"],
            "query_ms_one_index": round(query_latency_ms(tmp / "local", queries), 3),
            "query_ms_over_shards": round(query_latency_ms(tmp / "ray", queries), 3),
        }
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
