"""Benchmark: dense, lexical (BM25) and hybrid retrieval on the English and the Chinese STS-B retrieval sets (#31).

For each set (`simsearch eval make-stsb-retrieval --lang en|zh`, built under --cache once):
a flat index of its corpus with the bundled all-MiniLM-L6-v2 (built once, --backend torch by
default), then nDCG@10, MRR@10 and Recall@100 of every mode over all judged queries
(trec_eval's measures, `eval retrieval`), and the median latency of a single query (encoder
included, --latency-queries of them one at a time after a warm-up, the modes taking turns on
each query so that a busier moment of the machine falls on all of them), as a ratio to dense
in the same run. `auto` is the default mode: weighted hybrid at the index's own alpha.

    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/hybrid.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import paths  # noqa: I001  (puts the repository root on sys.path)
from common.corpus import CorpusSpec
from eval.retrieval import evaluate_retrieval
from eval.retrieval_data import load_qrels, load_queries
from index import BuildConfig
from index.fusion import SearchOptions
from simsearch import api

MODES = [
    SearchOptions("dense"), SearchOptions("lexical"), SearchOptions("hybrid"), SearchOptions("auto"),
    *(SearchOptions("hybrid", "weighted", alpha=alpha) for alpha in (0.2, 0.3, 0.5, 0.7, 0.8)),
]


def prepared(cache: Path, data_dir: Path, lang: str, backend: str) -> Path:
    """The retrieval set's folder, with its index in `index/` (both made on first use)."""
    folder = cache / f"hybrid-{lang}"
    if not (folder / "qrels.tsv").is_file():
        api.make_stsb_retrieval(folder, data_dir, lang=lang, overwrite=True)
    if not (folder / "index" / "manifest.json").is_file():
        api.build(CorpusSpec(folder / "corpus.jsonl"), folder / "index", BuildConfig(index_type="flat", overwrite=True), backend=backend)
    return folder


def latencies_ms(index, texts: list[str], modes: list[SearchOptions]) -> list[float]:
    """Median milliseconds of one query searched alone (top 10) per mode, the modes taking turns on each query, after a warm-up."""
    for options in modes:
        index.search(texts[:1], 10, options=options)
    times: list[list[float]] = [[] for _ in modes]
    for text in texts:
        for spent, options in zip(times, modes):
            started = time.perf_counter()
            index.search([text], 10, options=options)
            spent.append((time.perf_counter() - started) * 1000)
    return [statistics.median(spent) for spent in times]


def run_set(folder: Path, latency_queries: int) -> list[dict]:
    """One row per mode: quality over every judged query, and single-query latency."""
    index = api.open_index(folder / "index")
    queries, qrels = load_queries(folder / "queries.tsv"), load_qrels(folder / "qrels.tsv")
    rows = []
    for options in MODES:
        result = evaluate_retrieval(index, queries, qrels, (10, 100), options=options)
        label = f"auto = {result.mode}" if options.mode == "auto" else result.mode
        rows.append({"mode": label, "ndcg@10": result.metrics["ndcg@10"], "mrr@10": result.metrics["mrr@10"],
                     "recall@100": result.metrics["recall@100"], "queries": result.queries})
    for row, p50 in zip(rows, latencies_ms(index, list(queries.values())[:latency_queries], MODES)):
        row["p50_ms"] = p50
    dense = rows[0]
    for row in rows:
        row["p50_vs_dense"] = row["p50_ms"] / dense["p50_ms"]
        row["ndcg@10_vs_dense"] = (row["ndcg@10"] - dense["ndcg@10"]) * 100
    return rows


def table(lang: str, folder: Path, rows: list[dict]) -> str:
    corpus = sum(1 for _ in open(folder / "corpus.jsonl", encoding="utf-8"))
    lines = [f"{lang}: {corpus:,} documents, {rows[0]['queries']} judged queries",
             "| mode | nDCG@10 ×100 | Δ vs dense | MRR@10 ×100 | Recall@100 ×100 | single query p50 ms | × dense |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['ndcg@10'] * 100:.2f} | {r['ndcg@10_vs_dense']:+.2f} | {r['mrr@10'] * 100:.2f} | {r['recall@100'] * 100:.2f} "
                     f"| {r['p50_ms']:.1f} | {r['p50_vs_dense']:.2f} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    results = {}
    for lang in args.lang:
        folder = prepared(paths.cache_dir(args.cache), args.data_dir, lang, args.backend)
        results[lang] = run_set(folder, args.latency_queries)
        print(table(lang, folder, results[lang]) + "\n", flush=True)
    (paths.cache_dir(args.cache) / "hybrid-results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", nargs="+", choices=("en", "zh"), default=["en", "zh"], help="which sets (default: both)")
    parser.add_argument("--backend", default="torch", help="encoder backend for the index and the queries (default: torch)")
    parser.add_argument("--latency-queries", type=int, default=100, help="single queries timed per mode")
    paths.add_path_options(parser)
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
