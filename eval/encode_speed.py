"""Encoding speed, peak memory and quality of encoder backends, each in its own process (`simsearch bench encode`).

Every backend runs in a fresh interpreter (`python -m eval.encode_speed --worker ...`), so
its peak RSS is its own; rounds alternate the backend order (A/B, then B/A) and each speed is
the median over the rounds. Only `encode` is timed (after a one-batch warm-up); model loading
is reported apart. A first untimed round encodes the quality sentences (and builds any ONNX
export): Spearman per backend on an STS set when one is given, and the row cosine of each
backend's vectors to torch's when torch runs. `st` is sentence-transformers' own
`SentenceTransformer.encode` on the same model (the speed reference when it runs).

numpy and the models are imported inside the functions that use them: the CLI reads
BENCH_BACKENDS from here for `--help`.
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedder.backends import BACKENDS
from errors import SimsearchError, UsageError

if TYPE_CHECKING:
    import numpy as np

    from common.sts_data import StsData

REFERENCE = "st"  # sentence-transformers' own encode
BENCH_BACKENDS = (REFERENCE, *BACKENDS)
CODE_ROOT = Path(__file__).resolve().parents[1]  # the folder holding eval/, so the worker runs this same code


@dataclass(frozen=True)
class BenchConfig:
    """What to run: model, backends (in round order), batch size, timed rounds, and a folder for sentences and vectors."""

    work: Path
    model: str | None = None
    backends: tuple[str, ...] = BENCH_BACKENDS
    batch_size: int = 64
    repeats: int = 3


@dataclass(frozen=True)
class Row:
    """One backend: medians over the timed rounds, and quality numbers (None when not measured)."""

    backend: str
    sent_per_s: float
    peak_mib: float
    load_s: float
    spearman: float | None
    min_cos: float | None
    mean_cos: float | None


@dataclass(frozen=True)
class EncodeBench:
    """Rows per backend plus what they were measured on."""

    rows: list[Row]
    sentences: int
    batch_size: int
    repeats: int
    sts_name: str | None

    def table(self) -> str:
        return table(self.rows, self.sts_name)

    def header(self) -> str:
        """What was timed and where (sentences, rounds, CPU, library versions)."""
        return f"{self.sentences:,} sentences, batch size {self.batch_size}, median of {self.repeats} alternating rounds\n{environment()}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "environment": environment()}


def load_backend(backend: str, model: str | None, batch_size: int) -> Callable[[list[str]], Any]:
    """A function texts → normalized vectors for one backend name ('st' is plain sentence-transformers)."""
    if backend == REFERENCE:
        from sentence_transformers import SentenceTransformer

        from embedder.model_files import resolve_model

        st = SentenceTransformer(resolve_model(model), device="cpu", local_files_only=True)
        return lambda texts: st.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    from embedder.backends import load_encoder

    encoder = load_encoder(model, "cpu", backend)
    return lambda texts: encoder.encode(texts, batch_size=batch_size, show_progress=False)


def worker(backend: str, sentences: Path, model: str | None, batch_size: int, save: Path | None) -> dict[str, float | str]:
    """One backend in this process: load, then time encode (and save the vectors if asked)."""
    import numpy as np

    texts = json.loads(sentences.read_text(encoding="utf-8"))
    start = time.perf_counter()
    encode = load_backend(backend, model, batch_size)
    load_s = time.perf_counter() - start
    encode(texts[:batch_size])  # warm-up
    start = time.perf_counter()
    vectors = encode(texts)
    encode_s = time.perf_counter() - start
    if save is not None:
        np.save(save, np.asarray(vectors, dtype=np.float32))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"backend": backend, "load_s": load_s, "sent_per_s": len(texts) / encode_s, "peak_mib": peak_mib}


def run_worker(backend: str, sentences: Path, config: BenchConfig, save: Path | None = None) -> dict[str, float | str]:
    """`worker` for one backend in a fresh interpreter; its failure is a one-line error naming the backend."""
    command = [sys.executable, "-m", "eval.encode_speed", "--worker", backend, "--sentences", str(sentences), "--batch-size", str(config.batch_size)]
    command += ["--model", config.model] if config.model else []
    command += ["--save", str(save)] if save else []
    path = os.pathsep.join(p for p in (str(CODE_ROOT), os.environ.get("PYTHONPATH")) if p)
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("Error: ")  # the worker's own one-line error
        raise SimsearchError(f"the {backend} worker failed (exit {result.returncode}): {last}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def quality(vectors: dict[str, np.ndarray], texts: list[str], sts: StsData | None) -> dict[str, tuple[float | None, float | None, float | None]]:
    """Per backend: Spearman on `sts` (None without one), and min / mean row cosine to torch's vectors (None without torch)."""
    import numpy as np

    from common.measures import pair_cosines, sts_correlations

    rows = {s: i for i, s in enumerate(texts)}
    out = {}
    for backend, v in vectors.items():
        spearman = None
        if sts is not None:
            first, second = (np.array([rows[s] for s in side]) for side in (sts.sentences1, sts.sentences2))
            spearman = sts_correlations(pair_cosines(v, first, second), sts.scores).spearman
        cosines = np.einsum("ij,ij->i", v, vectors["torch"]) if "torch" in vectors else None
        out[backend] = (spearman, None if cosines is None else float(cosines.min()), None if cosines is None else float(cosines.mean()))
    return out


def _number(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(rows: list[Row], sts_name: str | None = None) -> str:
    """Markdown table: speed ratio to the reference (st, else torch, else the first), Spearman points vs torch, cosine to torch."""
    base = next((r for r in rows if r.backend == REFERENCE), None) or next((r for r in rows if r.backend == "torch"), rows[0])
    torch_row = next((r for r in rows if r.backend == "torch"), None)
    label = "ST" if base.backend == REFERENCE else base.backend
    lines = [
        f"| backend | sentences/s | × {label} | peak RSS MiB | load s | {sts_name or 'STS'} Spearman ×100 | Δ vs torch | min cos to torch | mean cos to torch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        delta = None if r.spearman is None or torch_row is None or torch_row.spearman is None else 100 * (r.spearman - torch_row.spearman)
        lines.append(
            f"| {r.backend} | {r.sent_per_s:,.0f} | {r.sent_per_s / base.sent_per_s:.2f} | {r.peak_mib:,.0f} | {r.load_s:.1f} | "
            f"{_number(None if r.spearman is None else 100 * r.spearman, '.2f')} | {_number(delta, '+.2f')} | {_number(r.min_cos, '.4f')} | {_number(r.mean_cos, '.4f')} |"
        )
    return "\n".join(lines)


def environment() -> str:
    """CPU count, processor and the versions of the libraries that encode (those installed)."""
    from importlib import metadata

    versions = []
    for package in ("torch", "sentence-transformers", "onnxruntime"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    return f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python {platform.python_version()}, " + ", ".join(versions)


def run_bench(texts: Sequence[str], config: BenchConfig, sts: StsData | None = None, log: Callable[[str], None] | None = None) -> EncodeBench:
    """Time `texts` on every backend (alternating rounds), then measure quality on `sts`'s sentences (or `texts`)."""
    import numpy as np

    if not texts:
        raise UsageError("no sentences to encode")
    unknown = sorted(set(config.backends) - set(BENCH_BACKENDS))
    if unknown or not config.backends:
        raise UsageError(f"backends must be some of {', '.join(BENCH_BACKENDS)} (got {', '.join(unknown) or 'none'})")
    config.work.mkdir(parents=True, exist_ok=True)
    quality_texts = list(dict.fromkeys(sts.sentences1 + sts.sentences2)) if sts is not None else list(texts)
    timed, untimed = config.work / "sentences.json", config.work / "quality-sentences.json"
    timed.write_text(json.dumps(list(texts)), encoding="utf-8")
    untimed.write_text(json.dumps(quality_texts), encoding="utf-8")

    vectors = {}
    for backend in config.backends:  # untimed round: quality vectors, ONNX exports
        run_worker(backend, untimed, config, save=config.work / f"{backend}.npy")
        vectors[backend] = np.load(config.work / f"{backend}.npy")
    scores = quality(vectors, quality_texts, sts)

    runs: dict[str, list[dict]] = {b: [] for b in config.backends}
    for round_ in range(config.repeats):
        order = config.backends if round_ % 2 == 0 else config.backends[::-1]
        for backend in order:
            runs[backend].append(run_worker(backend, timed, config))
            if log is not None:
                log(f"round {round_ + 1} {backend}: {runs[backend][-1]['sent_per_s']:,.0f} sent/s")
    medians = {b: [statistics.median(r[k] for r in runs[b]) for k in ("sent_per_s", "peak_mib", "load_s")] for b in config.backends}
    rows = [Row(b, *medians[b], *scores[b]) for b in config.backends]
    return EncodeBench(rows, len(texts), config.batch_size, config.repeats, None if sts is None else sts.name)


def main() -> None:
    """The worker entry point: one backend, one JSON line on stdout (errors: one line on stderr)."""
    parser = argparse.ArgumentParser(description="one encode_speed worker (run by run_bench)")
    parser.add_argument("--worker", choices=BENCH_BACKENDS, required=True)
    parser.add_argument("--sentences", type=Path, required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args()
    try:
        print(json.dumps(worker(args.worker, args.sentences, args.model, args.batch_size, args.save)))
    except SimsearchError as exc:
        sys.exit(f"Error: {exc}")


if __name__ == "__main__":
    main()
