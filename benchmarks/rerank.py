"""Benchmark: a trained cross-encoder re-ranker (#32) beside bi-encoders on STS-B, and re-ranking the top N of a search.

1. STS-B test and dev Spearman ×100 of the re-ranker (on each of --backends), of the bundled
   all-MiniLM-L6-v2, and of each --bi-encoder (say, `train cosent`'s model): `eval sts`.
2. On the English STS-B retrieval set (`eval make-stsb-retrieval`, a flat index of its corpus
   with the bundled model; shared with benchmarks/hybrid.py's cache): nDCG@10 and MRR@10 of the
   first stage alone (each of --modes) and re-ranked with N = each of --tops on each backend, at
   each --weights (the cross-encoder's order alone, or blended with the first stage's scores),
   over all judged queries.
3. Latency, one query at a time (--latency-queries after a warm-up, the settings taking turns on
   each query): the first stage alone, and first stage + re-ranking N on each backend, median ms;
   the re-ranking alone is their difference.

    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/rerank.py --reranker build/models/reranker \
        --bi-encoder build/models/cosent-stsb-en-2ep
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import paths  # noqa: I001  (puts the repository root on sys.path)
from hybrid import prepared
from common.reranker import Reranker
from embedder import DEFAULT_MODEL_NAME
from embedder.backends import BACKENDS
from embedder.reranking import load_reranker
from eval.retrieval import evaluate_retrieval
from eval.retrieval_data import load_qrels, load_queries
from index.fusion import SearchOptions
from simsearch import api


def sts_rows(data_dir: Path, models: list[tuple[str, str]]) -> list[dict]:
    """STS-B test and dev Spearman ×100 of each (model, backend) (a cross-encoder scores the pairs, a bi-encoder their cosines)."""
    stsb = data_dir / "stsb-en" / "stsbenchmark.tsv.gz"
    rows = []
    for model, backend in models:
        report = api.eval_sts([f"{stsb}:test", f"{stsb}:dev"], model=model, backend=backend)
        test, dev = (run.result.spearman * 100 for run in report.runs)
        rows.append({"model": model, "backend": backend, "kind": report.kind, "test": test, "dev": dev})
    return rows


def retrieval_rows(index, queries: dict, qrels: dict, rerankers: dict[str, Reranker], modes: list[str], tops: list[int], weights: list[float]) -> list[dict]:
    """nDCG@10 and MRR@10 of each first stage, alone and re-ranked with each N on each backend at each weight."""
    rows = []
    for mode in modes:
        for backend, top, weight in [(None, None, 1.0), *((backend, top, weight) for backend in rerankers for top in tops for weight in weights)]:
            options = SearchOptions(mode, rerank_top=top, rerank_weight=weight) if top else SearchOptions(mode)
            result = evaluate_retrieval(index, queries, qrels, (10,), options=options, reranker=rerankers[backend] if backend else None)
            setting = result.mode + (f" ({backend})" if backend else "")
            rows.append({"setting": setting, "mode": mode, "backend": backend, "top": top, "weight": weight, "ndcg@10": result.metrics["ndcg@10"] * 100,
                         "mrr@10": result.metrics["mrr@10"] * 100, "queries": result.queries})
            print(f"  {setting}: nDCG@10 {rows[-1]['ndcg@10']:.2f}, MRR@10 {rows[-1]['mrr@10']:.2f}", flush=True)
    for row in rows:
        alone = next(r for r in rows if r["mode"] == row["mode"] and r["top"] is None)
        row["ndcg@10_vs_first"] = row["ndcg@10"] - alone["ndcg@10"]
    return rows


def latencies_ms(index, texts: list[str], rerankers: dict[str, Reranker], mode: str, tops: list[int]) -> dict[str, float]:
    """Median ms of one query searched alone (top 10), without re-ranking ("—") and re-ranking each N on each backend, taking turns per query."""
    settings = [("—", SearchOptions(mode), None)]
    settings += [(f"{top} ({backend})", SearchOptions(mode, rerank_top=top), reranker) for backend, reranker in rerankers.items() for top in tops]
    for _, options, reranker in settings:  # warm-up
        index.search(texts[:1], 10, options=options, reranker=reranker)
    spent: dict[str, list[float]] = {label: [] for label, _, _ in settings}
    for text in texts:
        for label, options, reranker in settings:
            started = time.perf_counter()
            index.search([text], 10, options=options, reranker=reranker)
            spent[label].append((time.perf_counter() - started) * 1000)
    return {label: statistics.median(times) for label, times in spent.items()}


def sts_table(sts: list[dict]) -> str:
    lines = ["STS-B, Spearman ×100", "| model | kind | backend | test | dev |", "|---|---|---|---:|---:|"]
    return "\n".join(lines + [f"| {r['model']} | {r['kind']} | {r['backend']} | {r['test']:.2f} | {r['dev']:.2f} |" for r in sts])


def retrieval_table(retrieval: list[dict], latency: dict[str, float], mode: str) -> str:
    lines = [f"STS-B retrieval set (en), {retrieval[0]['queries']} judged queries", "| first stage, re-ranking | nDCG@10 ×100 | Δ vs first stage | MRR@10 ×100 |",
             "|---|---:|---:|---:|"]
    lines += [f"| {r['setting']} | {r['ndcg@10']:.2f} | {r['ndcg@10_vs_first']:+.2f} | {r['mrr@10']:.2f} |" for r in retrieval]
    alone = latency["—"]
    lines += ["", f"Single query, first stage {mode}, top 10: median ms", "| re-ranked N (backend) | p50 ms | re-ranking ms (p50 difference) | × first stage |",
              "|---|---:|---:|---:|"]
    lines += [f"| {label} | {ms:.1f} | {ms - alone:.1f} | {ms / alone:.2f} |" for label, ms in latency.items()]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    models = [(str(args.reranker), backend) for backend in args.backends] + [(m, "torch") for m in [DEFAULT_MODEL_NAME, *map(str, args.bi_encoder)]]
    sts = sts_rows(args.data_dir, models)
    print(sts_table(sts) + "\n", flush=True)
    folder = prepared(paths.cache_dir(args.cache), args.data_dir, "en", "torch")
    index = api.open_index(folder / "index")
    queries, qrels = load_queries(folder / "queries.tsv"), load_qrels(folder / "qrels.tsv")
    rerankers = {backend: load_reranker(str(args.reranker), backend) for backend in args.backends}
    retrieval = retrieval_rows(index, queries, qrels, rerankers, args.modes, args.tops, args.weights)
    latency = latencies_ms(index, list(queries.values())[: args.latency_queries], rerankers, args.modes[0], args.tops)
    print(retrieval_table(retrieval, latency, args.modes[0]), flush=True)
    results = {"sts": sts, "retrieval": retrieval, "latency_ms": latency}
    (paths.cache_dir(args.cache) / "rerank-results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reranker", type=Path, required=True, help="the cross-encoder folder (`simsearch train rerank -o`)")
    parser.add_argument("--bi-encoder", type=Path, nargs="*", default=[], help="more bi-encoders for the STS-B table (say, `train cosent`'s model)")
    parser.add_argument("--modes", nargs="+", default=["auto"], help="first stages (default: auto, the default mode); latency uses the first")
    parser.add_argument("--tops", type=int, nargs="+", default=[20, 50, 100], help="candidates re-ranked (default: 20 50 100)")
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 0.5], help="--rerank-weight values for the retrieval rows (default: 1 0.5)")
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx-int8"], choices=BACKENDS, help="the re-ranker's runtimes (default: torch onnx-int8)")
    parser.add_argument("--latency-queries", type=int, default=50, help="single queries timed per setting")
    paths.add_path_options(parser)
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
