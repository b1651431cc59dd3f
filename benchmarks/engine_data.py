"""Benchmark data for the index engine: clustered synthetic vectors and cached real sentence embeddings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
CACHE = Path("/work/cache")


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


def shared_sentences() -> list[str]:
    """Distinct sentences of STS-B (en), SICK, Chinese STS-B and the zh-triplets query/pos/neg, in first-seen order."""
    from eval import load_sts

    found: list[str] = []
    for split in ("train", "dev", "test"):
        data = load_sts(DATA / "stsb-en" / "stsbenchmark.tsv.gz", split)
        found += data.sentences1 + data.sentences2
    for name in ("SICK_train.txt", "SICK_trial.txt"):
        data = load_sts(DATA / "sick" / name, None)
        found += data.sentences1 + data.sentences2
    for name in ("train", "valid", "test"):
        data = load_sts(DATA / "stsb-zh" / f"STS-B.{name}.data", None)
        found += data.sentences1 + data.sentences2
    with open(DATA / "zh-triplets" / "bge_finetune_data.jsonl", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            found += [record["query"], *record["pos"], *record["neg"]]
    return list(dict.fromkeys(s.strip() for s in found if s.strip()))


def shared_embeddings() -> tuple[list[str], np.ndarray]:
    """The default model's normalized embeddings of `shared_sentences()`, cached under /work/cache."""
    sentences = shared_sentences()
    path = CACHE / f"engine-shared-minilm-{len(sentences)}.npy"
    if path.exists():
        return sentences, np.load(path)
    from embedder import encode, load_model

    vectors = encode(load_model(), sentences, batch_size=128, show_progress=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path.with_suffix(".partial.npy"), vectors)
    path.with_suffix(".partial.npy").replace(path)
    return sentences, vectors


if __name__ == "__main__":
    texts, vecs = shared_embeddings()
    print(len(texts), vecs.shape)
