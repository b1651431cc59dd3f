"""Benchmark: cold start of whole `simsearch` processes (--help, a query with onnx-int8 and with torch) vs loading the model.

The index: every distinct sentence of STS-B (all splits) and SICK (train + trial), one
document each, encoded with the bundled default model (all-MiniLM-L6-v2) into a flat index,
built once and cached under --cache (with `--build-backend onnx-int8` by default: it encodes
~8x faster than torch on CPU; the torch row then queries it with `--backend torch`, the
same model on the other runtime, which is what `query --backend torch` costs on any index).

Each command is a fresh interpreter (`python -m cli ...` from this checkout, what the
`simsearch` script runs), timed from spawn to exit, with its peak RSS from
`/usr/bin/time -f %M`. One untimed warm-up round fills the page cache; then `--runs`
rounds alternate the command order and the table shows medians. The reference is the cost a torch
query cannot avoid: `python -c "from sentence_transformers import SentenceTransformer;
SentenceTransformer(<default model folder>)"`.

    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/startup.py ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import engine_data
import paths  # noqa: I001  (puts the repository root on sys.path)
from embedder.model_files import default_model_path
from index.manifest import MANIFEST_NAME, Manifest

MIN_DOCUMENTS = 10_000
QUERY = "A man is playing a guitar on stage."
HELP_GOAL_S, INT8_GOAL_S, TORCH_OVER_REFERENCE_S = 0.5, 2.0, 1.0
GNU_TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Timing:
    """One command's medians over the timed runs (seconds, MiB) and every run's wall time."""

    name: str
    median_s: float
    min_s: float
    max_s: float
    peak_mib: float
    runs: list[float]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def ensure_index(cache: Path, data_dir: Path, backend: str) -> Path:
    """The cached index folder, built on first use from the shared sentences (one per line)."""
    folder = cache / f"index-{backend}"
    if (folder / MANIFEST_NAME).is_file() and Manifest.read(folder).document_count >= MIN_DOCUMENTS:
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    corpus = cache / "sentences.txt"
    texts = engine_data.english_sentences(data_dir)
    corpus.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    print(f"building {folder} from {len(texts):,} sentences with {backend} (once) ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    subprocess.run(cli("index", "build", str(corpus), "-o", str(folder), "--backend", backend, "--overwrite"), check=True, cwd=paths.ROOT, env=environment())
    print(f"built in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return folder


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(paths.ROOT)}


def run_once(command: list[str]) -> tuple[float, float]:
    """Wall seconds from spawn to exit, and peak RSS (MiB) of the process from GNU time (`%M`), when /usr/bin/time is there.

    Without it the peak comes from wait4, which is floored by this process's own RSS (the
    child is forked from it before exec): ~45 MiB, more than `--help` needs.
    """
    with tempfile.TemporaryDirectory() as scratch:
        rss_file, errors_file = Path(scratch) / "rss", Path(scratch) / "stderr"
        wrapped = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *command] if Path(GNU_TIME).is_file() else command
        with open(errors_file, "wb") as errors:
            start = time.perf_counter()
            process = subprocess.Popen(wrapped, cwd=paths.ROOT, env=environment(), stdout=subprocess.DEVNULL, stderr=errors)
            _, status, usage = os.wait4(process.pid, 0)
            elapsed = time.perf_counter() - start
        process.returncode = code = os.waitstatus_to_exitcode(status)  # reaped by wait4 above
        if code != 0:
            sys.exit(f"{' '.join(command)} failed ({code}): {errors_file.read_text(errors='replace')[-2000:]}")
        peak_kib = int(rss_file.read_text().split()[-1]) if rss_file.is_file() else usage.ru_maxrss
    return elapsed, peak_kib / 1024


def measure(commands: dict[str, list[str]], runs: int) -> list[Timing]:
    """One untimed warm-up round, then `runs` rounds alternating the order; medians per command."""
    names = list(commands)
    for name in names:
        run_once(commands[name])
    walls: dict[str, list[float]] = {n: [] for n in names}
    peaks: dict[str, list[float]] = {n: [] for n in names}
    for round_ in range(runs):
        for name in names if round_ % 2 == 0 else names[::-1]:
            wall, peak = run_once(commands[name])
            walls[name].append(wall)
            peaks[name].append(peak)
            print(f"round {round_ + 1} {name}: {wall:.2f} s", file=sys.stderr, flush=True)
    return [Timing(n, statistics.median(walls[n]), min(walls[n]), max(walls[n]), statistics.median(peaks[n]), walls[n]) for n in names]


def table(timings: list[Timing]) -> str:
    """Markdown table with each goal, whether it was met, and the ratio to the model-load reference."""
    by_name = {t.name: t for t in timings}
    reference = by_name["reference"].median_s
    goals = {
        "help": (f"≤ {HELP_GOAL_S} s", by_name["help"].median_s <= HELP_GOAL_S),
        "query onnx-int8": (f"≤ {INT8_GOAL_S} s", by_name["query onnx-int8"].median_s <= INT8_GOAL_S),
        "query torch": (f"≤ reference + {TORCH_OVER_REFERENCE_S} s = {reference + TORCH_OVER_REFERENCE_S:.2f} s",
                        by_name["query torch"].median_s <= reference + TORCH_OVER_REFERENCE_S),
    }
    lines = ["| command | median s | min s | max s | peak RSS MiB | × reference | goal | met |", "|---|---:|---:|---:|---:|---:|---|---|"]
    for t in timings:
        goal, met = goals.get(t.name, ("(reference)", None))
        shown = "–" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {t.name} | {t.median_s:.2f} | {t.min_s:.2f} | {t.max_s:.2f} | {t.peak_mib:,.0f} | {t.median_s / reference:.2f} | {goal} | {shown} |")
    torch_over = by_name["query torch"].median_s - reference
    lines.append(f"\nquery torch − reference = {torch_over:+.2f} s (goal ≤ +{TORCH_OVER_REFERENCE_S:.1f} s)")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    cache = Path(args.cache)
    folder = ensure_index(cache, Path(args.data_dir), args.build_backend)
    manifest = Manifest.read(folder)
    model = str(default_model_path())
    commands = {
        "help": cli("--help"),
        "query onnx-int8": cli("query", str(folder), args.query, "--backend", "onnx-int8"),
        "query torch": cli("query", str(folder), args.query, "--backend", "torch"),
        "reference": [sys.executable, "-c", f"from sentence_transformers import SentenceTransformer; SentenceTransformer({model!r})"],
    }
    load_before = os.getloadavg()
    timings = measure(commands, args.runs)
    load_after = os.getloadavg()
    print(f"index: {folder} ({manifest.document_count:,} documents, {manifest.index_type}, {manifest.model}, built with {manifest.backend})")
    print(f"median of {args.runs} alternating runs per command after one warm-up round; query: {args.query!r}")
    print(f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python {platform.python_version()}; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(table(timings))
    record = {"index": str(folder), "documents": manifest.document_count, "load_average": [load_before, load_after], "timings": [asdict(t) for t in timings]}
    (cache / "results.json").write_text(json.dumps(record, indent=2), encoding="utf-8")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="shared data folder with stsb-en/ and sick/ (e.g. ../shared/data)")
    parser.add_argument("--cache", default=str(paths.ROOT / "build" / "startup-bench"), help="index and results (default: build/startup-bench)")
    parser.add_argument("--build-backend", default="onnx-int8", choices=("torch", "onnx", "onnx-int8"), help="backend that encodes the index once")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (median reported)")
    parser.add_argument("--query", default=QUERY)
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
