"""Benchmark: float, 8-bit, product-quantized and binary indexes, each with and without float rescoring (#33).

Every row is a real index folder built by the library from vectors already encoded
(`index.assemble`, the path Ray builds take: train on a sample, add, tune nprobe /
efSearch on held-out corpus vectors to --target-recall, write), then loaded by
`simsearch.api.open_index` and searched through its search layer. Two sets:

- `stsb`: the English STS-B retrieval set (`simsearch eval make-stsb-retrieval`, under
  --cache), embedded once by the bundled all-MiniLM-L6-v2: nDCG@10 over its judged queries;
- `clustered`: --n synthetic unit vectors of dimension 384 around 4,000 centres
  (benchmarks/engine_data.py), 1,000 queries drawn from the same mixture.

Each compressed type is built once with its float vectors kept (tuned with rescoring on, as
`index build` does) and measured with rescoring off and at x4. Per row: nDCG@10 (stsb), recall@10 against exact float search, bytes per vector held in
RAM and on disk (`index info`'s accounting), build seconds, queries/s for the whole query
batch and the median latency of one query alone, each as a ratio to flat float search
measured in the same run.

    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/quantization.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

import engine_data
import paths  # noqa: I001  (puts the repository root on sys.path)
from common.corpus import Document
from eval.retrieval import score_run
from eval.retrieval_data import load_qrels, load_queries
from index.assemble import assemble_index
from index.build import BuildConfig, make_plan
from index.partial import PartialBuild
from index.quality import measure_qps
from index.rescore import FLOATS_NAME
from index.search import load_index
from common.measures import recall_at_k
from simsearch import api

K = 10
# Types in the order of the table; flat float is the reference. Each other type is built once with its float vectors kept and
# measured twice: rescoring off (`search_params["rescore"] = 0` on the loaded index) and at x4 (the build's default for binary).
TYPES = ("flat", "sq8", "ivfpq", "binary", "binary-hnsw")
RESCORE = 4
RECORD_CHUNK = 20_000


def stsb_set(cache: Path, data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], dict]:
    """(corpus vectors, their ids, query vectors, query ids, qrels) of the English STS-B retrieval set, embedded once and cached."""
    folder = cache / "hybrid-en"  # the same set benchmarks/hybrid.py uses
    if not (folder / "qrels.tsv").is_file():
        api.make_stsb_retrieval(folder, data_dir, lang="en", overwrite=True)
    queries, qrels = load_queries(folder / "queries.tsv"), load_qrels(folder / "qrels.tsv")
    judged = [q for q in queries if q in qrels]
    saved = cache / "quantization" / "stsb-en.npz"
    if not saved.is_file():
        records = [json.loads(line) for line in open(folder / "corpus.jsonl", encoding="utf-8")]
        encoder = api.load_encoder(None)
        paths.cache_dir(saved.parent)
        np.savez(saved, corpus=encoder.encode([r["text"] for r in records], 64, show_progress=True), ids=np.array([r["id"] for r in records]),
                 queries=encoder.encode([queries[q] for q in judged], 64))
    with np.load(saved) as arrays:
        return arrays["corpus"], arrays["ids"].astype(np.int64), arrays["queries"], judged, qrels


def build_folder(out: Path, vectors: np.ndarray, ids: np.ndarray, index_type: str, rescore: int, target_recall: float) -> float:
    """Record `vectors` as an encoded build would, then assemble an index folder of `index_type`; returns the assembly's seconds."""
    config = BuildConfig(index_type=index_type, rescore=rescore, target_recall=target_recall, show_progress=False, overwrite=True)
    partial = PartialBuild.open(out, {"benchmark": index_type}, vectors.shape[1], resume=False)
    for start in range(0, len(vectors), RECORD_CHUNK):
        chunk = ids[start : start + RECORD_CHUNK]
        partial.record_chunk(vectors[start : start + RECORD_CHUNK], chunk, [Document(int(i), f"doc {i}") for i in chunk])
    plan = make_plan(config, len(vectors), vectors.shape[1])
    started = time.perf_counter()
    assemble_index(partial, out, plan, config, "benchmark", {}, {})
    return time.perf_counter() - started


def p50_ms(search, queries: np.ndarray, count: int) -> float:
    """Median milliseconds of one query searched alone (top 10), after one warm-up."""
    search(queries[:1], K)
    spent = []
    for row in queries[:count]:
        started = time.perf_counter()
        search(row[None, :], K)
        spent.append((time.perf_counter() - started) * 1000)
    return statistics.median(spent)


def run_set(name: str, base: np.ndarray, ids: np.ndarray, queries: np.ndarray, scratch: Path, args, judged=None, qrels=None) -> list[dict]:
    """Two rows per type (rescoring off, x4; one for flat) on one set, with ratios to the flat row."""
    truth = ids[faiss.knn(queries, base, K, metric=faiss.METRIC_INNER_PRODUCT)[1]]
    rows = []
    for index_type in ["flat", *(t for t in TYPES[1:] if t in args.types.split(","))]:
        folder = scratch / f"{name}-{index_type}"
        build_s = build_folder(folder, base, ids, index_type, 0 if index_type == "flat" else RESCORE, args.target_recall)
        index = load_index(folder, gpu="off")
        memory = index.manifest.memory()
        floats = sum(r["bytes"] for f, r in index.manifest.files.items() if f.rsplit("/", 1)[-1] == FLOATS_NAME) / len(base)
        for rescore in [0] if index_type == "flat" else [0, RESCORE]:
            index.vectors.apply_search_params({"rescore": rescore})
            scores, found = index.search_ids(queries, 100 if qrels else K)
            row = {
                "set": name, "type": index_type, "rescore": rescore, "params": {**index.manifest.search_params, "rescore": rescore}, "build_s": build_s,
                "recall@10": recall_at_k(found[:, :K], truth, K), "ram_bytes": memory["ram_bytes_per_vector"],
                "disk_bytes": memory["disk_bytes_per_vector"] - (0 if rescore else floats),
                "qps_batch": measure_qps(index.search_ids, queries, K, min_seconds=1.0), "p50_ms": p50_ms(index.search_ids, queries, args.single),
            }
            if qrels:
                run = {q: {str(i): float(s) for s, i in zip(row_s, row_i) if i >= 0} for q, row_s, row_i in zip(judged, scores.tolist(), found.tolist())}
                row["ndcg@10"] = score_run(run, {q: qrels[q] for q in judged}, (10, 100)).metrics["ndcg@10"]
            rows.append(row)
            print(line(row, rows[0]), flush=True)
        index.store.close()
    for row in rows:
        flat = rows[0]
        row.update({"ram_x_smaller": flat["ram_bytes"] / row["ram_bytes"], "qps_vs_flat": row["qps_batch"] / flat["qps_batch"],
                    "p50_vs_flat": row["p50_ms"] / flat["p50_ms"], "build_vs_flat": row["build_s"] / max(flat["build_s"], 1e-9)})
        if "ndcg@10" in row:
            row["ndcg_vs_flat"] = row["ndcg@10"] / flat["ndcg@10"]
    return rows


def line(row: dict, flat: dict) -> str:
    ndcg = f"{row['ndcg@10']:.4f} ({row['ndcg@10'] / flat['ndcg@10']:.3f}x) | " if "ndcg@10" in row else ""
    params = ", ".join(f"{k}={v}" for k, v in row["params"].items() if k != "rescore") or "-"
    return (f"| {row['type']} | {row['rescore'] or 'off'} | {params} | {ndcg}{row['recall@10']:.3f} | {row['ram_bytes']:.0f} ({flat['ram_bytes'] / row['ram_bytes']:.1f}x smaller) | "
            f"{row['disk_bytes']:.0f} | {row['build_s']:.1f} | {row['qps_batch']:,.0f} ({row['qps_batch'] / flat['qps_batch']:.2f}x) | "
            f"{row['p50_ms']:.2f} ({row['p50_ms'] / flat['p50_ms']:.2f}x) |")


def header(with_ndcg: bool) -> str:
    names = ["type", "rescore", "search params", *(["nDCG@10 (x flat)"] if with_ndcg else []), "recall@10 vs exact", "RAM bytes/vector (x smaller than flat)",
             "disk bytes/vector", "build s", "QPS batched (x flat)", "p50 ms one query (x flat)"]
    return "| " + " | ".join(names) + " |\n" + "|---" * len(names) + "|"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="stsb,clustered", help="comma-separated: stsb, clustered")
    parser.add_argument("--n", type=int, default=200_000, help="clustered: vectors (1,000,000 when the time allows)")
    parser.add_argument("--queries", type=int, default=1_000, help="clustered: queries")
    parser.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    parser.add_argument("--types", default=",".join(TYPES), help="comma-separated subset of %(default)s (flat, the reference, always runs first)")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    paths.add_path_options(parser)
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads", flush=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(dir=paths.cache_dir(args.cache)) as scratch:
        for name in [s for s in args.sets.split(",") if s]:
            if name == "stsb":
                base, ids, queries, judged, qrels = stsb_set(args.cache, args.data_dir)
                print(f"\nstsb: {len(base):,} documents, {len(queries)} judged queries\n{header(True)}", flush=True)
                rows += run_set(name, base, ids, queries, Path(scratch), args, judged, qrels)
            else:
                base, queries = engine_data.clustered(args.n, 384, 4_000, args.queries)
                print(f"\nclustered: {len(base):,} x 384, {len(queries)} queries\n{header(False)}", flush=True)
                rows += run_set(name, base, np.arange(len(base), dtype=np.int64), queries, Path(scratch), args)
    print(f"\nwall time {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
