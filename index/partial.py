"""A build in progress: the folder `.NAME.partial` beside the target, with a progress record, so `--resume` can continue.

Per completed chunk, in this order: its vectors and ids are appended to raw
stream files, its texts are committed to SQLite, then `progress.json` is
replaced atomically. A resumed build trusts only what `progress.json` counts:
it cuts the stream files back to that many rows, re-adds those vectors to the
(trained) index without re-encoding, and continues reading the corpus there.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from errors import UsageError
from index.store import STORE_NAME, DocStore
from index.vectors import VectorIndex

PROGRESS_NAME = "progress.json"
SAMPLE_NAME = "sample.npz"
TRAINED_NAME = "trained.faiss"
STREAM_VECTORS, STREAM_IDS = "stream.f32", "stream.i64"
SCRATCH = (PROGRESS_NAME, SAMPLE_NAME, TRAINED_NAME, STREAM_VECTORS, STREAM_IDS)


def partial_path(target: Path) -> Path:
    return target.parent / f".{target.name}.partial"


class PartialBuild:
    """Scratch folder of one build: its identity (corpus + options), progress, sample and streamed vectors."""

    def __init__(self, folder: Path, identity: dict[str, Any], dim: int, done: int, store: DocStore) -> None:
        self.folder, self.identity, self.dim, self.done, self.store = folder, identity, dim, done, store

    @classmethod
    def open(cls, target: Path, identity: dict[str, Any], dim: int, resume: bool) -> PartialBuild:
        """Continue the partial build of `target` when `resume` and it matches `identity`; else start afresh."""
        folder = partial_path(target)
        record = folder / PROGRESS_NAME
        if resume and record.is_file():
            progress = json.loads(record.read_text(encoding="utf-8"))
            if progress["identity"] != identity:
                changed = sorted(k for k in identity if progress["identity"].get(k) != identity[k])
                raise UsageError(f"{folder}: the partial build used different {', '.join(changed)}; build without --resume to start over")
            done = int(progress["documents_done"])
            for name, width in ((STREAM_VECTORS, 4 * dim), (STREAM_IDS, 8)):
                with open(folder / name, "r+b") as handle:
                    handle.truncate(done * width)  # drop a chunk that was written but not recorded
            return cls(folder, identity, dim, done, DocStore.open_writable(folder / STORE_NAME))
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name in (STREAM_VECTORS, STREAM_IDS):
            (folder / name).touch()
        partial = cls(folder, identity, dim, 0, DocStore.create(folder / STORE_NAME))
        partial._record()
        return partial

    def _record(self) -> None:
        tmp = self.folder / (PROGRESS_NAME + ".tmp")
        tmp.write_text(json.dumps({"identity": self.identity, "documents_done": self.done}, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.folder / PROGRESS_NAME)

    def save_sample(self, positions: np.ndarray, vectors: np.ndarray, ids: np.ndarray) -> None:
        np.savez(self.folder / SAMPLE_NAME, positions=positions, vectors=vectors, ids=ids)

    def load_sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        if not (self.folder / SAMPLE_NAME).is_file():
            return None
        with np.load(self.folder / SAMPLE_NAME) as saved:
            return saved["positions"], saved["vectors"], saved["ids"]

    def save_trained(self, vectors: VectorIndex) -> None:
        vectors.write(self.folder)
        os.replace(self.folder / "vectors.faiss", self.folder / TRAINED_NAME)

    def trained_path(self) -> Path | None:
        return self.folder / TRAINED_NAME if (self.folder / TRAINED_NAME).is_file() else None

    def stream(self) -> tuple[np.ndarray, np.ndarray]:
        """The recorded (vectors, ids) as read-only memory maps, in corpus order."""
        if not self.done:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros(0, dtype=np.int64)
        vectors = np.memmap(self.folder / STREAM_VECTORS, dtype=np.float32, mode="r", shape=(self.done, self.dim))
        return vectors, np.memmap(self.folder / STREAM_IDS, dtype=np.int64, mode="r", shape=(self.done,))

    def completed_chunks(self, chunk_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(vectors, ids) already recorded, read back from the stream files chunk by chunk."""
        vectors, ids = self.stream()
        for start in range(0, self.done, chunk_size):
            yield np.array(vectors[start : start + chunk_size]), np.array(ids[start : start + chunk_size])

    def record_chunk(self, vectors: np.ndarray, ids: np.ndarray, documents) -> None:
        """Persist one completed chunk (vectors, ids, texts), then count it."""
        for name, array in ((STREAM_VECTORS, vectors.astype(np.float32, copy=False)), (STREAM_IDS, ids.astype(np.int64, copy=False))):
            with open(self.folder / name, "ab") as handle:
                handle.write(array.tobytes())
                handle.flush()
                os.fsync(handle.fileno())
        self.store.add(documents, replace=True)
        self.done += len(ids)
        self._record()

    def finish(self) -> Path:
        """Close the store and delete scratch files; the folder is then a complete index (minus vectors/manifest)."""
        self.store.close()
        for name in SCRATCH:
            (self.folder / name).unlink(missing_ok=True)
        return self.folder
