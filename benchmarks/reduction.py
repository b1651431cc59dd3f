"""Benchmark: dimension reduction (whitening, JL) quality, index size, and fit cost vs references.

For each model (argument: folder, hub name or 'default'): STS-B test Spearman at full dim and
after whitening / JL (ours and sklearn's GaussianRandomProjection, mean ± std over seeds) at
each k, recall@10 against full-dim exact search on the fit corpus, FAISS index bytes per
vector, and what `--dim auto` (measured on STS-B dev) chooses. Whitening is fitted on the
distinct sentences of STS-B train (unlabeled). For the first model, also: our streaming
whitening fit vs sklearn PCA(whiten=True) on 100k embeddings (agreement, time, peak memory).

Embeddings are computed once per model and cached under CACHE/reduce (--cache, default: the
user cache dir): for the first model, of every distinct sentence in --data-dir (default
../shared/data; 34,638; they also feed the 100k fit benchmark); for the others, of the
distinct STS-B sentences.
    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/reduction.py default [MODEL ...]
Only the fit benchmark is timed; --fit-size 0 skips it, --skip-quality runs only it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import sklearn
import torch
from sklearn.decomposition import PCA
from sklearn.random_projection import GaussianRandomProjection

import paths  # noqa: I001  (puts the repository root on sys.path)
from common.sts_data import load_sts
from embedder import encode, load_model, model_reference
from embedder.dim_choice import RecallMeasure, StsMeasure, choose_dim, format_sweep, sweep
from embedder.model_files import resolve_model
from embedder.reduction import CovarianceAccumulator, LinearMap, fit_whitening, jl_epsilon, jl_map
from engine_data import SHARED_STS, shared_sentences
from eval.plots import plot_sweep

STSB_EN = "stsb-en/stsbenchmark.tsv.gz"  # under --data-dir
# The shared STS files in the order this benchmark's cache keys were made with (zh before SICK).
REDUCTION_STS = SHARED_STS[:3] + SHARED_STS[5:] + SHARED_STS[3:5]


def model_fingerprint(name: str | None) -> str:
    """Model reference plus size and mtime of its files, so a retrained folder gets a new cache key."""
    target = Path(resolve_model(name))
    files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else []
    stamp = [(str(p.relative_to(target)), p.stat().st_size, int(p.stat().st_mtime)) for p in files]
    return json.dumps([model_reference(name), stamp])


def cached_embeddings(name: str | None, sentences: list[str], cache: Path, batch_size: int = 64) -> np.ndarray:
    """The model's raw output (no extra normalization) for `sentences`, cached under `cache`."""
    key = hashlib.sha1((model_fingerprint(name) + "\n" + "\n".join(sentences)).encode("utf-8")).hexdigest()[:16]
    path = cache / f"{key}.npy"
    if path.exists():
        return np.load(path)
    vectors = encode(load_model(name), sentences, batch_size, normalize=False, show_progress=True)
    partial = paths.cache_dir(cache) / f".{key}.partial.npy"
    np.save(partial, vectors)
    partial.replace(path)
    return vectors


def stsb_sentences(data: Path) -> list[str]:
    """Distinct sentences of STS-B en train, dev and test."""
    seen: dict[str, None] = {}
    for split in ("train", "dev", "test"):
        pairs = load_sts(data / STSB_EN, split)
        seen.update(dict.fromkeys(pairs.sentences1 + pairs.sentences2))
    return list(seen)


class Embedded:
    """Cached raw embeddings of a sentence pool, looked up by sentence."""

    def __init__(self, name: str | None, pool: list[str], cache: Path, data: Path) -> None:
        self.vectors = cached_embeddings(name, pool, cache)
        self.row = {s: i for i, s in enumerate(pool)}
        self.stsb = data / STSB_EN

    def of(self, sentences: list[str]) -> np.ndarray:
        return self.vectors[[self.row[s] for s in sentences]]

    def sts(self, split: str) -> StsMeasure:
        pairs = load_sts(self.stsb, split)
        unique = list(dict.fromkeys(pairs.sentences1 + pairs.sentences2))
        at = {s: i for i, s in enumerate(unique)}
        return StsMeasure(self.of(unique), np.array([at[s] for s in pairs.sentences1]), np.array([at[s] for s in pairs.sentences2]), pairs.scores)


def index_bytes_per_vector(vectors: np.ndarray) -> float:
    """Serialized size of our index type (IDMap2 over flat inner product) divided by the vector count."""
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.arange(len(vectors), dtype=np.int64))
    return len(faiss.serialize_index(index)) / len(vectors)


def normalized(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def sklearn_jl(fit: np.ndarray, k: int, seed: int) -> LinearMap:
    """sklearn's GaussianRandomProjection as a LinearMap (its components_ are k × d)."""
    projection = GaussianRandomProjection(n_components=k, random_state=seed).fit(fit)
    return LinearMap("jl", np.asarray(projection.components_).T)


def mean_std(values: list[float], scale: float = 100, digits: int = 2) -> str:
    return f"{np.mean(values) * scale:.{digits}f} ± {np.std(values) * scale:.{digits}f}"


def quality(name: str, embedded: Embedded, dims: list[int], seeds: int, plot: Path | None, compare_seeds: int = 20) -> None:
    """STS-B test Spearman, recall@10 and index bytes/vector per method and k; what auto picks on dev."""
    pairs = load_sts(embedded.stsb, "train")
    train = list(dict.fromkeys(pairs.sentences1 + pairs.sentences2))
    fit = embedded.of(train)
    stats = CovarianceAccumulator(fit.shape[1])
    for batch in np.array_split(fit, max(1, len(fit) // 2048)):
        stats.update(batch)
    whitening = fit_whitening(stats)
    test, dev, recall = embedded.sts("test"), embedded.sts("dev"), RecallMeasure(fit)
    model_dim = fit.shape[1]
    test_vectors = test.vectors
    print(f"\n## {model_reference(name)}  ({model_dim} dims; whitening fitted on {len(train):,} STS-B train sentences; "
          f"recall@10 over the same {len(train):,}, {recall.queries} queries)")
    print(f"{'method':<22}{'k':>5}{'test Spearman':>18}{'recall@10':>18}{'bytes/vector':>14}{'JL ε (N=fit)':>14}")
    print(f"{'full':<22}{model_dim:>5}{test.full * 100:>18.2f}{1.0:>18.3f}{index_bytes_per_vector(normalized(test_vectors)):>14.0f}{'-':>14}")
    if whitening.rank < model_dim:
        naive = LinearMap("whiten", whitening.components / np.sqrt(whitening.variances), whitening.mean)
        print(f"{'whiten, no rank check':<22}{model_dim:>5}{test(naive) * 100:>18.2f}{recall(naive):>18.3f}{'':>14}{'':>14}"
              f"  <- divides by the {model_dim - whitening.rank} ~zero variances (< 1e-10 of the largest)")
    for k in dims:
        white = whitening.map(min(k, whitening.rank))  # at most the rank the fit supports
        ours = [jl_map(model_dim, k, seed) for seed in range(seeds)]
        theirs = [sklearn_jl(fit, k, seed) for seed in range(seeds)]
        size = index_bytes_per_vector(normalized(white.transform(test_vectors)))
        jl_size = index_bytes_per_vector(normalized(ours[0].transform(test_vectors)))
        eps = jl_epsilon(len(train), k)
        eps_text = "none" if eps is None else f"{eps:.2f}"
        print(f"{'whiten':<22}{white.output_dim:>5}{test(white) * 100:>18.2f}{recall(white):>18.3f}{size:>14.0f}{'':>14}")
        print(f"{f'jl (ours, {seeds} seeds)':<22}{k:>5}{mean_std([test(m) for m in ours]):>18}"
              f"{mean_std([recall(m) for m in ours], 1, 3):>18}{jl_size:>14.0f}{eps_text:>14}")
        print(f"{f'jl (sklearn GRP)':<22}{k:>5}{mean_std([test(m) for m in theirs]):>18}"
              f"{mean_std([recall(m) for m in theirs], 1, 3):>18}{jl_size:>14.0f}{eps_text:>14}")
    print(f"JL ours vs sklearn GaussianRandomProjection over {compare_seeds} seeds each (test Spearman):")
    for k in dims:
        ours_scores = np.array([test(jl_map(model_dim, k, seed)) for seed in range(compare_seeds)]) * 100
        their_scores = np.array([test(sklearn_jl(fit, k, seed)) for seed in range(compare_seeds)]) * 100
        gap = ours_scores.mean() - their_scores.mean()
        stderr = np.sqrt(ours_scores.var(ddof=1) / compare_seeds + their_scores.var(ddof=1) / compare_seeds)
        print(f"  k={k:<4} ours {ours_scores.mean():.2f} ± {ours_scores.std():.2f}   sklearn {their_scores.mean():.2f} ± {their_scores.std():.2f}"
              f"   difference {gap:+.2f} = {gap / stderr:+.1f} standard errors")
    candidates = [k for k in (512, 384, 256, 192, 128, 96, 64, 32, 16, 8) if k <= model_dim]
    print("--dim auto (target 0.99 of full-dim STS-B dev Spearman; jl seed 0):")
    for method, make in (("whiten", whitening.map), ("jl", lambda k: jl_map(model_dim, k, 0))):
        usable = [k for k in candidates if k < model_dim] if method == "jl" else [k for k in candidates if k <= whitening.rank]
        choice = choose_dim(usable, dev, make, 0.99)
        chosen = "no reduction (full dim)" if choice.dim is None else f"k={choice.dim}"
        kept = test.full if choice.dim is None else test(make(choice.dim))
        scores = ", ".join(f"{k}:{v * 100:.1f}" for k, v in choice.scores.items())
        print(f"  {method:<7} dev full {dev.full * 100:.2f}; dev by k {scores} -> {chosen}; test Spearman {kept * 100:.2f}")
    print("sweep (as `simsearch reduce sweep` prints it, on STS-B test; JL ε for N = fit corpus):")
    rows = sweep(model_dim, [test, recall], lambda k: whitening.map(k) if k <= whitening.rank else None, lambda k, seed: jl_map(model_dim, k, seed), range(seeds))
    print(format_sweep(rows, len(train)))
    if plot is not None:
        plot_sweep([r.as_dict() for r in rows], plot, f"{model_reference(name)} · STS-B test · whitening fitted on STS-B train")
        print(f"plot: {plot}")


def best_time(fn: Callable[[], object], repeats: int = 3) -> float:
    """Best wall time of `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def traced_peak(fn: Callable[[], object]) -> float:
    """Peak memory traced (Python and numpy allocations) during one call, in MiB."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def fit_benchmark(embedded: Embedded, size: int, noise: float, batch: int = 4096) -> None:
    """Our streaming float64 fit vs sklearn PCA(whiten=True) on `size` resampled embeddings."""
    base = embedded.vectors
    d = base.shape[1]
    picks = np.random.default_rng(0).integers(0, len(base), size)

    def batches():
        """The embeddings as an encoder would deliver them: batch by batch, each made on demand."""
        for start in range(0, size, batch):
            rows = base[picks[start : start + batch]]
            yield (rows + np.random.default_rng(start).normal(0, noise, rows.shape)).astype(np.float32)

    def ours(data):
        stats = CovarianceAccumulator(d)
        for chunk in data:
            stats.update(chunk)
        return fit_whitening(stats)

    x = np.concatenate(list(batches()))
    x64 = x.astype(np.float64)
    print(f"\n## whitening fit on {size:,} embeddings ({len(base):,} distinct real sentences resampled, + N(0, {noise}²) noise), {d} dims")
    print("time: data already in memory (ours reads it in slices of %d); peak: data arriving batch by batch, "
          "so sklearn's input must first be gathered into one array (traced by tracemalloc)" % batch)
    fitted = ours(x[s : s + batch] for s in range(0, size, batch))
    reference = PCA(whiten=True).fit(x64)
    rows = [
        (f"ours: streaming float64, batches of {batch}", best_time(lambda: ours(x[s : s + batch] for s in range(0, size, batch))), traced_peak(lambda: ours(batches()))),
        (f"sklearn PCA(whiten=True) float64 [{reference._fit_svd_solver}]", best_time(lambda: PCA(whiten=True).fit(x64)),
         traced_peak(lambda: PCA(whiten=True).fit(np.concatenate(list(batches())).astype(np.float64)))),
        ("sklearn PCA(whiten=True) float32 input", best_time(lambda: PCA(whiten=True).fit(x)), traced_peak(lambda: PCA(whiten=True).fit(np.concatenate(list(batches()))))),
        ("sklearn PCA(whiten=True, svd_solver='full') float64", best_time(lambda: PCA(whiten=True, svd_solver="full").fit(x64), 1),
         traced_peak(lambda: PCA(whiten=True, svd_solver="full").fit(np.concatenate(list(batches())).astype(np.float64)))),
    ]
    print(f"{'fit':<58}{'seconds':>9}{'× ours':>8}{'peak MiB':>10}{'× ours':>8}")
    for label, seconds, peak in rows:
        print(f"{label:<58}{seconds:>9.2f}{seconds / rows[0][1]:>8.2f}{peak:>10.1f}{peak / rows[0][2]:>8.1f}")
    single = PCA(whiten=True).fit(x)
    for k in [k for k in (d, 256, 128) if k <= d]:
        mine = fitted.map(k).transform(x64)
        for label, pca in (("float64", reference), ("float32 input", single)):
            theirs = pca.transform(x64)[:, :k]
            signs = np.sign(np.sum(mine * theirs, axis=0))
            print(f"k={k:<4} max |ours − sklearn PCA {label}| on the transformed vectors (up to sign per component): {np.abs(mine - theirs * signs).max():.2e}")
    whitened = fitted.map(d).transform(x64)
    print(f"max |cov(whitened fit data) − I| at k={d}: {np.abs(np.cov(whitened, rowvar=False) - np.eye(d)).max():.2e}; "
          f"smallest/largest variance {fitted.variances[-1] / fitted.variances[0]:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=["default"], help="models to measure (folder, hub name or 'default')")
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 256, 128, 64])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--fit-size", type=int, default=100_000, help="embeddings for the fit benchmark (0 skips it)")
    parser.add_argument("--noise", type=float, default=0.001, help="std of the noise added to resampled embeddings")
    parser.add_argument("--warm-cache", action="store_true", help="only compute the cached embeddings")
    parser.add_argument("--skip-quality", action="store_true", help="only the (timed) fit benchmark")
    parser.add_argument("--plot-dir", type=Path, default=None, help="write one sweep plot per model here")
    paths.add_path_options(parser)
    args = parser.parse_args()
    if args.plot_dir:
        args.plot_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"faiss {faiss.__version__}, numpy {np.__version__}, sklearn {sklearn.__version__}")
    started = time.perf_counter()
    for position, name in enumerate(args.models):
        name = None if name == "default" else name
        first = position == 0  # its pool (all distinct sentences) also feeds the fit benchmark
        pool = shared_sentences(args.data_dir, REDUCTION_STS) if first else stsb_sentences(args.data_dir)
        embedded = Embedded(name, pool, args.cache / "reduce", args.data_dir)
        if args.warm_cache:
            continue
        plot = args.plot_dir / f"reduction-sweep-{Path(model_reference(name)).name}.png" if args.plot_dir else None
        if not args.skip_quality:
            quality(name, embedded, [k for k in args.dims if k <= embedded.vectors.shape[1]], args.seeds, plot)
        if first and args.fit_size > 0:
            fit_benchmark(embedded, args.fit_size, args.noise)
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
