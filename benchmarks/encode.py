"""Benchmark: encoding speed, peak memory and quality of the torch, onnx and onnx-int8 backends vs sentence-transformers.

Sentences: the distinct sentences of an STS-B file (all splits; `--limit N` keeps the first N
for quick runs). Every backend runs in its own subprocess, so its peak RSS is its own; rounds
alternate the backend order (A/B, then B/A) and each number is the median over `--repeats`
rounds. Only `encode` is timed (after a one-batch warm-up); model loading is reported apart.
A first untimed round encodes the STS-B test sentences (and builds any ONNX export), for
test Spearman per backend and the cosine of each backend's vectors to torch's.

    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/encode.py ../shared/data/stsb-en/stsbenchmark.tsv.gz --limit 2000

`st` is sentence-transformers' own `SentenceTransformer.encode` on the same model;
`torch` is our SentenceEncoder. Vectors and timings go under `--cache` (default build/encode-bench).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKENDS = ("st", "torch", "onnx", "onnx-int8")


def load_backend(backend: str, model: str | None, batch_size: int):
    """A function texts → normalized vectors for one backend name ('st' is plain sentence-transformers)."""
    if backend == "st":
        from sentence_transformers import SentenceTransformer

        from embedder.model_files import resolve_model

        st = SentenceTransformer(resolve_model(model), device="cpu", local_files_only=True)
        return lambda texts: st.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    from embedder.backends import load_encoder

    encoder = load_encoder(model, "cpu", backend)
    return lambda texts: encoder.encode(texts, batch_size=batch_size, show_progress=False)


def worker(args: argparse.Namespace) -> None:
    """One backend in this process: load, then time encode (or save test vectors); one JSON line on stdout."""
    texts = json.loads(Path(args.sentences).read_text(encoding="utf-8"))
    start = time.perf_counter()
    encode = load_backend(args.worker, args.model, args.batch_size)
    load_s = time.perf_counter() - start
    encode(texts[: args.batch_size])  # warm-up
    start = time.perf_counter()
    vectors = encode(texts)
    encode_s = time.perf_counter() - start
    if args.save:
        np.save(args.save, np.asarray(vectors, dtype=np.float32))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"backend": args.worker, "load_s": load_s, "sent_per_s": len(texts) / encode_s, "peak_mib": peak_mib}))


def run_worker(backend: str, sentences: Path, args: argparse.Namespace, save: Path | None = None) -> dict:
    """Run `worker` for one backend in a fresh interpreter."""
    command = [sys.executable, __file__, "--worker", backend, "--sentences", str(sentences), "--batch-size", str(args.batch_size)]
    command += ["--model", args.model] if args.model else []
    command += ["--save", str(save)] if save else []
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if result.returncode != 0:
        sys.exit(f"{backend} worker failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Row:
    """One backend's medians and quality numbers."""

    backend: str
    sent_per_s: float
    peak_mib: float
    load_s: float
    spearman: float
    min_cos: float
    mean_cos: float


def quality(vectors: dict[str, np.ndarray], rows: dict[str, int], data) -> dict[str, tuple[float, float, float]]:
    """Per backend: STS-B test Spearman, and min / mean row cosine to torch's vectors."""
    from common.measures import pair_cosines, sts_correlations

    first = np.array([rows[s] for s in data.sentences1])
    second = np.array([rows[s] for s in data.sentences2])
    out = {}
    for backend, v in vectors.items():
        cosines = np.einsum("ij,ij->i", v, vectors["torch"])
        out[backend] = (sts_correlations(pair_cosines(v, first, second), data.scores).spearman, float(cosines.min()), float(cosines.mean()))
    return out


def table(rows: list[Row]) -> str:
    """Markdown table with speed ratios vs sentence-transformers and Spearman points vs torch."""
    base = next(r for r in rows if r.backend == "st")
    torch_row = next(r for r in rows if r.backend == "torch")
    lines = [
        "| backend | sentences/s | × ST | peak RSS MiB | load s | STS-B test Spearman ×100 | Δ vs torch | min cos to torch | mean cos to torch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.backend} | {r.sent_per_s:,.0f} | {r.sent_per_s / base.sent_per_s:.2f} | {r.peak_mib:,.0f} | {r.load_s:.1f} | "
            f"{100 * r.spearman:.2f} | {100 * (r.spearman - torch_row.spearman):+.2f} | {r.min_cos:.4f} | {r.mean_cos:.4f} |"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    from common.sts_data import load_sts

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    every = load_sts(args.data, split=None)
    texts = list(dict.fromkeys(every.sentences1 + every.sentences2))[: args.limit]
    test = load_sts(args.data, "test")
    test_texts = list(dict.fromkeys(test.sentences1 + test.sentences2))
    timed, untimed = cache / "sentences.json", cache / "test-sentences.json"
    timed.write_text(json.dumps(texts), encoding="utf-8")
    untimed.write_text(json.dumps(test_texts), encoding="utf-8")

    vectors = {}
    for backend in args.backends:  # untimed round: test vectors, ONNX exports
        run_worker(backend, untimed, args, save=cache / f"{backend}.npy")
        vectors[backend] = np.load(cache / f"{backend}.npy")
    scores = quality(vectors, {s: i for i, s in enumerate(test_texts)}, test)

    runs: dict[str, list[dict]] = {b: [] for b in args.backends}
    for round_ in range(args.repeats):
        order = args.backends if round_ % 2 == 0 else args.backends[::-1]
        for backend in order:
            runs[backend].append(run_worker(backend, timed, args))
            print(f"round {round_ + 1} {backend}: {runs[backend][-1]['sent_per_s']:,.0f} sent/s", file=sys.stderr)

    rows = [Row(b, *(statistics.median(r[k] for r in runs[b]) for k in ("sent_per_s", "peak_mib", "load_s")), *scores[b]) for b in args.backends]
    import onnxruntime
    import torch

    print(f"{len(texts):,} distinct STS-B sentences, batch size {args.batch_size}, median of {args.repeats} alternating rounds")
    print(f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    print(table(rows))
    (cache / "results.json").write_text(json.dumps([r.__dict__ for r in rows], indent=2), encoding="utf-8")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", help="STS-B file (e.g. ../shared/data/stsb-en/stsbenchmark.tsv.gz)")
    parser.add_argument("--model", default=None, help="model folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--limit", type=int, default=None, help="time only the first N distinct sentences")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--cache", default=str(ROOT / "build" / "encode-bench"), help="vectors and results (default: build/encode-bench)")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--sentences", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.worker and (not args.data or not {"st", "torch"} <= set(args.backends)):
        parser.error("give the STS-B file; --backends must include st and torch (the references)")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    worker(arguments) if arguments.worker else main(arguments)
