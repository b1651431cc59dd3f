"""Benchmark data for the index engine: clustered synthetic vectors and cached real sentence embeddings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import paths

# The STS files of the shared data (path under --data-dir, split), in the order the index benchmark reads them.
SHARED_STS: tuple[tuple[str, str | None], ...] = (
    *(("stsb-en/stsbenchmark.tsv.gz", split) for split in ("train", "dev", "test")),
    ("sick/SICK_train.txt", None),
    ("sick/SICK_trial.txt", None),
    *((f"stsb-zh/STS-B.{part}.data", None) for part in ("train", "valid", "test")),
)

# The English ones (see english_sentences).
ENGLISH_STS: tuple[tuple[str, str | None], ...] = (("stsb-en/stsbenchmark.tsv.gz", None), ("sick/SICK_train.txt", None), ("sick/SICK_trial.txt", None))


def clustered(n: int, dim: int, centres: int, queries: int, seed: int = 0, spread: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors drawn from a Gaussian mixture around `centres` random unit centres (base, queries)."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, dim), dtype=np.float32)
    means /= np.linalg.norm(means, axis=1, keepdims=True)

    def draw(count: int) -> np.ndarray:
        out = np.empty((count, dim), dtype=np.float32)
        for start in range(0, count, 100_000):
            stop = min(count, start + 100_000)
            block = means[rng.integers(0, centres, stop - start)]
            block += rng.standard_normal(block.shape, dtype=np.float32) * (spread / np.sqrt(dim))
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[start:stop] = block
        return out

    return draw(n), draw(queries)


def uniform(n: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Uniformly random unit vectors: no neighbourhood structure, the worst case for every ANN index."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + queries, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n], x[n:]


def shared_sentences(data: Path, sts: tuple[tuple[str, str | None], ...] = SHARED_STS, triplets: bool = True) -> list[str]:
    """Distinct sentences of the `sts` files under `data`, then (if `triplets`) the zh-triplets query/pos/neg, in first-seen order."""
    from common.sts_data import load_sts

    found: list[str] = []
    for name, split in sts:
        pairs = load_sts(data / name, split)
        found += pairs.sentences1 + pairs.sentences2
    if triplets:
        with open(data / "zh-triplets" / "bge_finetune_data.jsonl", encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                found += [record["query"], *record["pos"], *record["neg"]]
    return list(dict.fromkeys(s.strip() for s in found if s.strip()))


def english_sentences(data: Path) -> list[str]:
    """Distinct sentences of STS-B (every split) and SICK (train, trial): what the serving and start-up benchmarks index."""
    return shared_sentences(data, ENGLISH_STS, triplets=False)


def shared_embeddings(cache: Path, data: Path, limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """The default model's normalized embeddings of the first `limit` (None: all) `shared_sentences`, cached under `cache`."""
    sentences = shared_sentences(data)[:limit]
    path = cache / f"engine-shared-minilm-{len(sentences)}.npy"
    if path.exists():
        return sentences, np.load(path)
    from embedder.backends import load_encoder

    vectors = load_encoder().encode(sentences, batch_size=128, show_progress=True)
    partial = paths.cache_dir(cache) / f".{path.stem}.partial.npy"
    np.save(partial, vectors)
    partial.replace(path)
    return sentences, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description="Compute (or find) the cached embeddings of the shared sentences and print their shape.")
    paths.add_path_options(parser)
    parser.add_argument("--limit", type=int, default=None, help="only the first N sentences (default: all)")
    args = parser.parse_args()
    texts, vectors = shared_embeddings(args.cache, args.data_dir, args.limit)
    print(len(texts), vectors.shape)


if __name__ == "__main__":
    main()
