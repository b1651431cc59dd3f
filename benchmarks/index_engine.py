"""Index engine benchmark: per type, build time, bytes/vector, QPS at k=10 (batch and one at a time), recall@10 vs exact.

References measured in the same run on the same data: raw FAISS (IndexFlatIP for exact,
and the very same FAISS index object without our search layer) and numpy brute force.

    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/index_engine.py --data clustered
    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/index_engine.py --data shared

Scratch index files and the cached shared embeddings go under --cache (default: the user cache dir).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

import engine_data
import paths
from common.corpus import Document
from index.manifest import Manifest
from index.plan import DEFAULT_AUTO_BUDGET, parse_memory, plan_for_type, tuning_query_count
from index.selection import select_plan
from common.measures import StreamingExactTopK, recall_at_k
from index.quality import tune_and_measure
from index.search import SearchIndex
from index.store import DocStore
from index.vectors import VectorIndex

K = 10
CHUNK = 100_000


@dataclass
class Row:
    name: str
    n: int
    build_s: float
    bytes_per_vector: float
    qps_batch: float
    qps_single: float
    recall: float
    note: str = ""


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def best_seconds(fn, *args, budget: float = 6.0) -> tuple[object, float]:
    """Result and the fastest of up to 3 timed calls (fewer when one call is slow): less noise on a shared machine."""
    out, best = timed(fn, *args)
    spent = best
    for _ in range(2):
        if spent > budget:
            break
        out, seconds = timed(fn, *args)
        best, spent = min(best, seconds), spent + seconds
    return out, best


def qps_single(search, queries: np.ndarray) -> float:
    start = time.perf_counter()
    for row in queries:
        search(row[None, :], K)
    return len(queries) / (time.perf_counter() - start)


def numpy_topk(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute force in numpy: blocks of scores, argpartition, then sort the k best."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 100):
        scores = queries[start : start + 100] @ base.T
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1)
        out[start : start + 100] = np.take_along_axis(part, order, 1)
    return out


def engine_build(plan, base: np.ndarray, ids: np.ndarray, target_recall: float, seed: int = 0) -> tuple[VectorIndex, dict]:
    """What `build_index` does after encoding: sample, train, add in chunks, stream exact top-k, tune, measure."""
    n = len(base)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(n, size=min(n, tuning_query_count(n) + plan.training_size(n)), replace=False)
    held_out = chosen[: tuning_query_count(n)]
    vectors = VectorIndex.create(plan, base.shape[1])
    if vectors.needs_training():
        vectors.train(base[chosen[len(held_out) :]])
    exact = StreamingExactTopK(base[held_out], K + 1)
    for start in range(0, n, CHUNK):
        keep = ~np.isin(ids[start : start + CHUNK], ids[held_out])
        vectors.add(base[start : start + CHUNK][keep], ids[start : start + CHUNK][keep])
        exact.add(base[start : start + CHUNK][keep], ids[start : start + CHUNK][keep])
    quality = tune_and_measure(plan, vectors.apply_search_params, lambda q, k: vectors.search(q, k)[1], exact.queries, ids[held_out], exact.ids, target_recall)
    vectors.add(base[held_out], ids[held_out])
    return vectors, quality.as_dict()


def file_bytes(vectors: VectorIndex, scratch: Path) -> int:
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        vectors.write(Path(folder))
        return sum(p.stat().st_size for p in Path(folder).iterdir())


def searcher_for(vectors: VectorIndex, dim: int, store: DocStore | None) -> SearchIndex:
    manifest = Manifest(model="benchmark", embedding_dim=dim, document_count=vectors.live_count, index_type=vectors.index_type)
    return SearchIndex(Path("."), manifest, vectors, store)


def text_store(texts: list[str], folder: Path) -> DocStore:
    path = folder / "docs.sqlite"
    DocStore.create(path).add(Document(i, t) for i, t in enumerate(texts))
    return DocStore(sqlite3.connect(path, check_same_thread=False))


def run(base, queries, truth, types, args, texts=None) -> list[Row]:
    n, dim = base.shape
    ids = np.arange(n, dtype=np.int64)
    single = queries[: args.single]
    rows: list[Row] = []

    flat = faiss.IndexFlatIP(dim)
    _, build_s = timed(flat.add, base)
    (_, _), seconds = best_seconds(flat.search, queries, K)
    raw_exact_qps = len(queries) / seconds
    rows.append(Row("raw FAISS IndexFlatIP (exact)", n, build_s, 4 * dim, raw_exact_qps, qps_single(flat.search, single), 1.0))
    del flat
    found, seconds = timed(numpy_topk, base, queries, K)
    np_single = len(single) / timed(lambda: [numpy_topk(base, q[None, :], K) for q in single])[1]
    rows.append(Row("numpy brute force (exact)", n, 0.0, 4 * dim, len(queries) / seconds, np_single, recall_at_k(found, truth, K)))

    scratch = paths.cache_dir(args.cache)
    store_dir = tempfile.TemporaryDirectory(dir=scratch)
    store = text_store(texts, Path(store_dir.name)) if texts is not None else None
    for name in types:
        sub_n = min(n, args.hnsw_subset) if name == "hnsw" and args.hnsw_subset else n
        sub_base, sub_ids = base[:sub_n], ids[:sub_n]
        sub_truth = truth if sub_n == n else sub_ids[faiss.knn(queries, sub_base, K, metric=faiss.METRIC_INNER_PRODUCT)[1]]
        plan = select_plan(sub_base, parse_memory(args.max_memory), args.target_recall, DEFAULT_AUTO_BUDGET).plan if name == "auto" else plan_for_type(name, sub_n, dim)
        (vectors, quality), build_s = timed(engine_build, plan, sub_base, sub_ids, args.target_recall)
        searcher = searcher_for(vectors, dim, store if sub_n == n else None)
        batch = queries if name != "sq8" or n <= 200_000 else queries[: args.single]
        (_, found), seconds = best_seconds(searcher.search_ids, batch, K)
        ours_qps = len(batch) / seconds
        (_, _), raw_seconds = best_seconds(vectors.faiss_index.search, batch, K)
        tuned = ", ".join(f"{k}={v}" for k, v in quality["search_params"].items())
        label = f"ours {name}" + (f" → {plan.index_type}" if name == "auto" else "") + f" ({plan.factory}{', ' + tuned if tuned else ''})"
        note = f"raw FAISS same index {len(batch) / raw_seconds:,.0f} QPS (ours/raw time {seconds / raw_seconds:.2f})"
        if sub_n != n:
            note += f"; built on the first {sub_n:,} vectors"
        if len(batch) != len(queries):
            note += f"; batch of {len(batch)}"
        if name == "auto":
            note += f"; {ours_qps / raw_exact_qps:.1f}x exact QPS; build-time tuning recall {quality['recall_at_10']:.3f}"
        if store is not None and sub_n == n:
            (_, seconds_hits) = best_seconds(searcher.search_vectors, batch, K)
            note += f"; with texts from SQLite {len(batch) / seconds_hits:,.0f} QPS"
        rows.append(Row(label, sub_n, build_s, file_bytes(vectors, scratch) / sub_n, ours_qps, qps_single(searcher.search_ids, single),
                        recall_at_k(found, sub_truth[: len(batch)], K), note))
        print(table(rows[-1:], header=False), flush=True)
        del vectors, searcher
    store_dir.cleanup()
    return rows


def table(rows: list[Row], header: bool = True) -> str:
    lines = ["| index | vectors | build s | bytes/vector | QPS batch | QPS one at a time | recall@10 | notes |", "|---|---:|---:|---:|---:|---:|---:|---|"] if header else []
    for r in rows:
        lines.append(f"| {r.name} | {r.n:,} | {r.build_s:.1f} | {r.bytes_per_vector:.0f} | {r.qps_batch:,.0f} | {r.qps_single:,.0f} | {r.recall:.3f} | {r.note} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("clustered", "uniform", "shared"), required=True)
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors (shared: at most this many sentences)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--centres", type=int, default=4_000)
    parser.add_argument("--spread", type=float, default=0.35, help="clustered: norm of the Gaussian noise around each unit centre")
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    parser.add_argument("--types", default="flat,auto,ivf,hnsw,sq8,ivfpq")
    parser.add_argument("--hnsw-subset", type=int, default=0, help="build HNSW on only the first N vectors (0: all)")
    parser.add_argument("--max-memory", default="2G")
    parser.add_argument("--target-recall", type=float, default=0.95)
    paths.add_path_options(parser)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON records (kind index-bench) for `simsearch report`")
    args = parser.parse_args()

    started = time.perf_counter()
    texts = None
    if args.data == "shared":
        texts, vectors = engine_data.shared_embeddings(args.cache, args.data_dir, args.n)
        held_out = np.zeros(len(vectors), dtype=bool)
        held_out[np.random.default_rng(0).choice(len(vectors), size=args.queries, replace=False)] = True
        # Queries are real sentences held out of the index (so none finds itself).
        base, queries = np.ascontiguousarray(vectors[~held_out]), np.ascontiguousarray(vectors[held_out])
        texts = [t for t, out in zip(texts, held_out) if not out]
    elif args.data == "clustered":
        base, queries = engine_data.clustered(args.n, args.dim, args.centres, args.queries, spread=args.spread)
    else:
        base, queries = engine_data.uniform(args.n, args.dim, args.queries)
    truth = faiss.knn(queries, base, K, metric=faiss.METRIC_INNER_PRODUCT)[1]
    print(f"data={args.data} spread={args.spread} centres={args.centres} n={len(base):,} dim={base.shape[1]} queries={len(queries)} faiss={faiss.__version__} "
          f"threads={faiss.omp_get_max_threads()} cpus={os.cpu_count()}", flush=True)
    rows = run(base, queries, truth, [t for t in args.types.split(",") if t], args, texts)
    print()
    print(table(rows))
    print(f"\nwall time {time.perf_counter() - started:.0f} s")
    if args.json:
        dataset = f"{args.data} ({len(base):,} x {base.shape[1]})"
        # Row's name/recall under the names `simsearch report` plots by (type, recall@10).
        renamed = {"name": "type", "recall": "recall@10"}
        records = [{"kind": "index-bench", "dataset": dataset, **{renamed.get(k, k): v for k, v in asdict(r).items()}} for r in rows]
        args.json.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
