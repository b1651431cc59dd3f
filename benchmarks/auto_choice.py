"""`--type auto` against every type tuned by hand: queries/s at the target recall, as ratios to the best, in one run.

Per data set: every candidate auto may pick is built at full size and its knob tuned by hand on the
benchmark's own queries (the smallest value whose recall@10 vs exact search reaches the target). auto
then selects on the same vectors (its selection time is printed), builds its winner at full size the way
`index build` does (knob tuned on held-out corpus vectors). Each index is written and read back, as a search process
holds it; all are then timed on the benchmark's queries in turn, one batch at a time, best of 5 rounds; ratios are to the fastest type that reached the target. A control
builds that type once more and times it in turn with it and auto: how much two builds of one index differ here.

    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/auto_choice.py --data clustered
    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/auto_choice.py --data stsb
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import engine_data
import paths
from common.measures import exact_knn, recall_at_k
from index.plan import DEFAULT_AUTO_BUDGET, parse_memory, search_param_candidates, tuning_query_count
from index.quality import tune_and_measure
from index.rescore import DEFAULT_RESCORE, FloatStore
from index.selection import full_plans, select_plan, timed_in_turn
from index.vectors import VectorIndex
from quantization import stsb_set

K = 10


def timed_rounds(indexes: dict[str, VectorIndex], queries: np.ndarray, rounds: int) -> dict[str, float]:
    """Queries/s of one batch search per index: auto's own timing (`timed_in_turn`), in windows of >= 0.5 s."""
    return timed_in_turn({label: (lambda q, k, v=v: v.search(q, k)[1]) for label, v in indexes.items()}, queries, rounds, 0.5)


def as_loaded(vectors: VectorIndex, scratch: Path) -> VectorIndex:
    """`vectors` written to a folder under `scratch` and read back, as a search process holds it (one contiguous copy: an HNSW
    graph grown in a long-running process can sit scattered in memory and search ~10 % slower than the same graph loaded)."""
    folder = Path(tempfile.mkdtemp(dir=scratch))
    vectors.write(folder)
    return VectorIndex.read(folder, vectors.index_type, vectors.search_params, floats=vectors.floats_description())


def build(plan, base: np.ndarray, ids: np.ndarray, rescore: int) -> tuple[VectorIndex, float]:
    """`plan` trained on its usual sample size, holding `base` under `ids`; float vectors kept when `rescore`."""
    started = time.perf_counter()
    vectors = VectorIndex.create(plan, base.shape[1])
    if vectors.needs_training():
        rows = np.random.default_rng(0).choice(len(base), size=plan.training_size(len(base)), replace=False)
        vectors.train(base[np.sort(rows)])
    vectors.add(base, ids)
    if rescore:
        vectors.floats = FloatStore.of(base, ids)
        vectors.apply_search_params({"rescore": rescore})
    return vectors, time.perf_counter() - started


def tune_by_hand(plan, vectors: VectorIndex, queries: np.ndarray, truth: np.ndarray, target: float) -> tuple[dict, float]:
    """The cheapest knob value whose recall@10 on the benchmark queries reaches `target` (else the best): (params, recall)."""
    best: tuple[dict, float] = ({}, recall_at_k(vectors.search(queries, K)[1], truth, K))
    for value in search_param_candidates(plan):
        vectors.apply_search_params({plan.tunable: value})
        recall = recall_at_k(vectors.search(queries, K)[1], truth, K)
        if recall > best[1] + 1e-9 or not best[0]:
            best = ({plan.tunable: value}, recall)
        if recall >= target:
            best = ({plan.tunable: value}, recall)
            break
    vectors.apply_search_params(best[0])
    return best


def run(name: str, base: np.ndarray, queries: np.ndarray, args) -> None:
    with tempfile.TemporaryDirectory(dir=paths.cache_dir(args.cache)) as scratch:
        compare(name, base, queries, args, Path(scratch))


def compare(name: str, base: np.ndarray, queries: np.ndarray, args, scratch: Path) -> None:
    """Print the table of one data set (index files written under `scratch`)."""
    n, dim = base.shape
    target, budget = args.target_recall, parse_memory(args.max_memory)
    truth = exact_knn(queries, base, K)[1]
    print(f"\n## {name}: {n:,} vectors x {dim}, {len(queries)} queries, target recall@10 {target}, --max-memory {args.max_memory}\n", flush=True)
    indexes: dict[str, VectorIndex] = {}
    rows: dict[str, tuple] = {}  # label -> (factory, build seconds, search params, recall@10)
    for candidate, plan, size in full_plans(n, dim, budget):
        if size > budget:
            continue
        vectors, seconds = build(plan, base, np.arange(n, dtype=np.int64), candidate.rescore)
        params, recall = tune_by_hand(plan, vectors, queries, truth, target)
        indexes[candidate.label], rows[candidate.label] = as_loaded(vectors, scratch), (plan.factory, f"{seconds:.1f}", params, recall)
        print(f"built {candidate.label}: {plan.factory} in {seconds:.1f} s, {params or '-'}, recall@10 {recall:.3f}", flush=True)

    started = time.perf_counter()
    selection = select_plan(base, budget, target, args.auto_budget, args.seed)
    selected = time.perf_counter() - started
    plan = selection.plan
    winner = next(c for c in selection.candidates if c.factory == plan.factory)
    vectors, quality, seconds = build_like_index_build(plan, base, DEFAULT_RESCORE if winner.index_type.startswith("binary") else 0, target, args.seed)
    auto = f"**auto → {winner.label}**"
    indexes[auto], rows[auto] = as_loaded(vectors, scratch), (plan.factory, f"{seconds:.1f} + selection {selected:.1f}", quality["search_params"],
                                          recall_at_k(vectors.search(queries, K)[1], truth, K))
    qps = timed_rounds(indexes, queries, args.rounds)
    fastest = max((label for label in rows if label != auto and rows[label][3] >= target), key=lambda label: qps[label])
    best = qps[fastest]
    print("\n| index | factory | build s | search params | recall@10 | QPS | vs best |\n|---|---|---:|---|---:|---:|---:|")
    for label, (factory, seconds, params, recall) in rows.items():
        print(f"| {label} | {factory} | {seconds} | {params or '-'} | {recall:.3f} | {qps[label]:,.0f} | {qps[label] / best:.2f} |")
    # Control: the fastest type built once more with the same knob, timed in turn with it and auto: how far two builds of the
    # same index differ here (HNSW graphs are built by parallel threads, not reproducibly), the noise floor of "vs best".
    candidate, same, _ = next(entry for entry in full_plans(n, dim, budget) if entry[0].label == fastest)
    again, _ = build(same, base, np.arange(n, dtype=np.int64), candidate.rescore)
    again.apply_search_params(rows[fastest][2])
    again = as_loaded(again, scratch)
    second = timed_rounds({fastest: indexes[fastest], "again": again, auto: indexes[auto]}, queries, args.rounds)
    print(f"\ncontrol, timed again in turn: {fastest} {second[fastest]:,.0f} QPS, the same type and knob built once more {second['again']:,.0f} "
          f"({second['again'] / second[fastest]:.2f}), auto {second[auto]:,.0f} ({second[auto] / second[fastest]:.2f})")
    print(f"\nauto measured {sum(c.measured for c in selection.candidates)} candidates on {selection.sample:,} sample vectors "
          f"in {selection.seconds:.1f} s (--auto-budget {args.auto_budget:g} s):")
    for c in selection.candidates:
        predicted = f"{c.predicted_qps:,.0f}" if c.predicted_qps else "-"
        print(f"    {c.label:16} recall@10 {c.recall_at_10 or 0:.3f}  predicted {predicted:>9} QPS  {c.note}")
    print("reasons: " + " | ".join(plan.reasons), flush=True)


def build_like_index_build(plan, base: np.ndarray, rescore: int, target: float, seed: int) -> tuple[VectorIndex, dict, float]:
    """What `index build` does with `plan`: hold out tuning vectors, build, tune the knob on them vs exact search, add them back."""
    started = time.perf_counter()
    n = len(base)
    ids = np.arange(n, dtype=np.int64)
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng(seed).choice(n, size=tuning_query_count(n), replace=False)] = True
    vectors, _ = build(plan, base[~held], ids[~held], rescore)
    truth = ids[~held][exact_knn(base[held], base[~held], K + 1)[1]]
    quality = tune_and_measure(plan, vectors.apply_search_params, lambda q, k: vectors.search(q, k)[1], base[held], ids[held], truth, target, K)
    vectors.add(base[held], ids[held])
    return vectors, quality.as_dict(), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("clustered", "stsb"), required=True)
    parser.add_argument("--n", type=int, default=200_000, help="clustered: vectors")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--centres", type=int, default=4_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--max-memory", default="2G")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--auto-budget", type=float, default=DEFAULT_AUTO_BUDGET)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds over every index (the best of each is kept)")
    paths.add_path_options(parser)
    args = parser.parse_args()
    if args.data == "clustered":
        base, queries = engine_data.clustered(args.n, args.dim, args.centres, args.queries)
        run("clustered", base, queries, args)
    else:
        corpus, _, queries, _, _ = stsb_set(args.cache, args.data_dir)
        run("STS-B retrieval corpus (all-MiniLM-L6-v2)", np.ascontiguousarray(corpus), np.ascontiguousarray(queries), args)


if __name__ == "__main__":
    main()
