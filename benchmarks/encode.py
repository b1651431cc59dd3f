"""Benchmark: encoding speed, peak memory and quality of the torch, onnx and onnx-int8 backends vs sentence-transformers.

Sentences: the distinct sentences of an STS-B file (all splits; `--limit N` keeps the first N
for quick runs); quality (Spearman, cosine to torch) on its test split. The runner is
eval.encode_speed (also behind `simsearch bench encode`): every backend in its own subprocess,
alternating rounds, medians over `--repeats`, only `encode` timed.

    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/encode.py ../shared/data/stsb-en/stsbenchmark.tsv.gz --limit 2000

`st` is sentence-transformers' own `SentenceTransformer.encode` on the same model;
`torch` is our SentenceEncoder. Vectors and results go under `--cache` (default build/encode-bench).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import paths  # noqa: I001  (puts the repository root on sys.path)
from common.sts_data import load_sts
from eval.encode_speed import BENCH_BACKENDS, BenchConfig, run_bench


def main(args: argparse.Namespace) -> None:
    every = load_sts(args.data, split=None)
    texts = list(dict.fromkeys(every.sentences1 + every.sentences2))[: args.limit]
    config = BenchConfig(Path(args.cache), args.model, tuple(args.backends), args.batch_size, args.repeats)
    result = run_bench(texts, config, load_sts(args.data, "test"), log=lambda line: print(line, file=sys.stderr))
    print(result.header())
    print(result.table())
    (config.work / "results.json").write_text(json.dumps(result.as_dict(), indent=2), encoding="utf-8")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="STS-B file (e.g. ../shared/data/stsb-en/stsbenchmark.tsv.gz)")
    parser.add_argument("--model", default=None, help="model folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--limit", type=int, default=None, help="time only the first N distinct sentences")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=list(BENCH_BACKENDS), choices=BENCH_BACKENDS)
    parser.add_argument("--cache", default=str(paths.ROOT / "build" / "encode-bench"), help="vectors and results (default: build/encode-bench)")
    args = parser.parse_args()
    if not {"st", "torch"} <= set(args.backends):
        parser.error("--backends must include st and torch (the references)")
    return args


if __name__ == "__main__":
    main(parse_args())
