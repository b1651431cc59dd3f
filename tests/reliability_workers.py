"""Processes that tests/test_concurrency.py starts and kills: a writer looping over build/add/remove, and a reader loop.

They index with `HashEncoder`, a real (if meaningless) encoder that needs no
torch, so a process starts in about a second and twenty kill -9 runs stay cheap;
the storage layer under test is the same whatever embeds the text.

    python tests/reliability_workers.py write INDEX CORPUS SEED
    python tests/reliability_workers.py read INDEX SECONDS STOP_FILE
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.corpus import CorpusSpec  # noqa: E402
from index.build import BuildConfig, build_index  # noqa: E402
from index.search import load_index  # noqa: E402
from index.update import add_documents, remove_documents  # noqa: E402

DIM = 16


class HashEncoder:
    """Each text → a fixed pseudo-random unit vector seeded by its CRC32 (deterministic across processes)."""

    name = "hash-encoder"
    dim = DIM

    def describe(self) -> dict:
        return {"backend": "hash", "reduction": None}

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool | None = None) -> np.ndarray:
        rows = [np.random.default_rng(zlib.crc32(t.encode())).standard_normal(DIM) for t in texts]
        vectors = np.array(rows, dtype=np.float32).reshape(-1, DIM)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)


def extra_corpus(folder: Path, seed: int) -> tuple[Path, list[int]]:
    """Five documents with ids 100000 + 10*seed.. that the writer adds and removes."""
    ids = [100_000 + 10 * seed + i for i in range(5)]
    path = folder / f"extra-{seed}.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": f"extra document {i}"}) + "\n" for i in ids), encoding="utf-8")
    return path, ids


def write_loop(index: Path, corpus: Path, seed: int) -> None:
    """Cycle add → remove → build --overwrite forever (until killed); says 'ready' first."""
    encoder = HashEncoder()
    extra, ids = extra_corpus(corpus.parent, seed)
    print("ready", flush=True)
    step = seed
    while True:
        operation = step % 3
        if operation == 0:
            add_documents(index, CorpusSpec(extra), encoder, upsert=True)
        elif operation == 1:
            present = load_index(index, gpu="off").store.existing(ids)
            if present:
                remove_documents(index, sorted(present))
        else:
            build_index(CorpusSpec(corpus), index, encoder, BuildConfig(overwrite=True, gpu="off", chunk_size=16))
        step += 1


def read_loop(index: Path, seconds: float, stop: Path) -> None:
    """Open and search `index` until `stop` exists (or `seconds` pass); print 'ready' after the first load, then {"loads", "errors", "first_error"}."""
    encoder, loads, errors, first = HashEncoder(), 0, 0, None
    query = encoder.encode(["the dog runs in the park 3"])
    deadline = time.monotonic() + seconds
    while not stop.exists() and time.monotonic() < deadline:
        try:
            searcher = load_index(index, gpu="off")
            scores, found = searcher.search_ids(query, 5)
            hits = searcher.store.get([i for i in found[0].tolist() if i >= 0])
            if len(hits) != (found[0] >= 0).sum() or not len(hits):
                raise AssertionError(f"ids {found[0].tolist()} but texts for {sorted(hits)}")
            searcher.store.close()
            loads += 1
            if loads == 1:
                print("ready", flush=True)
        except Exception as exc:  # counted and reported: the test asserts there are none
            errors += 1
            first = first or f"{type(exc).__name__}: {exc}"
    print(json.dumps({"loads": loads, "errors": errors, "first_error": first}), flush=True)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "write":
        write_loop(Path(args[0]), Path(args[1]), int(args[2]))
    else:
        read_loop(Path(args[0]), float(args[1]), Path(args[2]))
