"""A build in progress: the folder `.NAME.partial` beside the target, with a progress record, so `--resume` can continue.

Per completed chunk, in this order: its vectors and ids are appended to raw
stream files, its texts are committed to SQLite, then `progress.json` is
replaced atomically with the sha256 of each chunk's rows. A resumed build
trusts only what `progress.json` counts and checksums: a stream shorter than
that is refused at once (never padded); otherwise it cuts the stream files back
to that many rows and re-adds those vectors to the (trained) index without
re-encoding, checking each chunk's sha256 as it reads it (a mismatch is refused
then, before anything is written), and continues reading the corpus there.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import OWNER_MARK, is_own, mark_own, remove_own
from errors import DataError, UsageError
from index.plan import IndexPlan
from index.store import STORE_NAME, DocStore
from index.vectors import VectorIndex

PROGRESS_NAME = "progress.json"
SAMPLE_NAME = "sample.npz"
TRAINED_NAME = "trained.faiss"
SELECTION_NAME = "selection.json"  # what `--type auto` measured and chose (a resumed build keeps that choice)
STREAM_VECTORS, STREAM_IDS = "stream.f32", "stream.i64"
SCRATCH = (PROGRESS_NAME, SAMPLE_NAME, TRAINED_NAME, SELECTION_NAME, STREAM_VECTORS, STREAM_IDS)


def partial_path(target: Path) -> Path:
    return target.parent / f".{target.name}.partial"


class PartialBuild:
    """Scratch folder of one build: its identity (corpus + options), progress, sample and streamed vectors."""

    def __init__(self, folder: Path, identity: dict[str, Any], dim: int, done: int, store: DocStore, chunks: list | None = None) -> None:
        self.folder, self.identity, self.dim, self.done, self.store = folder, identity, dim, done, store
        self.chunks: list[list] = chunks or []  # [rows, sha256 of the rows' vector and id bytes] per recorded chunk

    @classmethod
    def open(cls, target: Path, identity: dict[str, Any], dim: int, resume: bool) -> PartialBuild:
        """Continue the partial build of `target` when `resume` and it matches `identity`; else start afresh."""
        folder = partial_path(target)
        record = folder / PROGRESS_NAME
        if (folder.exists() or folder.is_symlink()) and not is_own(folder, target):
            raise UsageError(
                f"{folder}: is in the way of the build of {target.name} and was not made by simsearch (no {OWNER_MARK} naming {target.name}); "
                "move it away (a partial build of an older simsearch can be removed)"
            )
        if resume and record.is_file():
            progress = _read_progress(record)
            if progress["identity"] != identity:
                changed = sorted(k for k in identity if progress["identity"].get(k) != identity[k])
                raise UsageError(f"{folder}: the partial build used different {', '.join(changed)}; build without --resume to start over")
            partial = cls(folder, identity, dim, int(progress["documents_done"]), DocStore.open_writable(folder / STORE_NAME), progress["chunks"])
            partial._check_checkpoint()
            return partial
        if folder.exists():
            remove_own(folder)
        folder.mkdir(parents=True)
        mark_own(folder, target)
        for name in (STREAM_VECTORS, STREAM_IDS):
            (folder / name).touch()
        partial = cls(folder, identity, dim, 0, DocStore.create(folder / STORE_NAME))
        partial._record()
        return partial

    def _check_checkpoint(self) -> None:
        """Refuse streams shorter than the record; cut off a chunk written but not recorded (checksums: `completed_chunks`)."""
        damaged = self._damaged()
        if sum(rows for rows, _ in self.chunks) != self.done:
            raise DataError(f"{damaged} ({PROGRESS_NAME} counts {self.done} rows but its chunks add up to {sum(r for r, _ in self.chunks)})")
        for name, width in ((STREAM_VECTORS, 4 * self.dim), (STREAM_IDS, 8)):
            size = (self.folder / name).stat().st_size if (self.folder / name).is_file() else 0
            if size < self.done * width:
                raise DataError(f"{damaged} ({name} holds {size} bytes, {PROGRESS_NAME} records {self.done} rows = {self.done * width} bytes)")
            with open(self.folder / name, "r+b") as handle:
                handle.truncate(self.done * width)  # drop a chunk that was written but not recorded
        if self.store.count() < self.done:
            raise DataError(f"{damaged} ({STORE_NAME} holds {self.store.count()} documents, {PROGRESS_NAME} records {self.done})")

    def _damaged(self) -> str:
        return f"{self.folder}: damaged checkpoint, build without --resume to start over"

    def _record(self) -> None:
        tmp = self.folder / (PROGRESS_NAME + ".tmp")
        tmp.write_text(json.dumps({"identity": self.identity, "documents_done": self.done, "chunks": self.chunks}, indent=2) + "\n", encoding="utf-8")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.folder / PROGRESS_NAME)

    def save_sample(self, positions: np.ndarray, vectors: np.ndarray, ids: np.ndarray) -> None:
        np.savez(self.folder / SAMPLE_NAME, positions=positions, vectors=vectors, ids=ids)

    def load_sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        if not (self.folder / SAMPLE_NAME).is_file():
            return None
        with np.load(self.folder / SAMPLE_NAME) as saved:
            return saved["positions"], saved["vectors"], saved["ids"]

    def save_selection(self, plan: IndexPlan, selection: dict[str, Any]) -> None:
        """Record auto's choice (written whole, then renamed: a resumed build reads it or nothing)."""
        tmp = self.folder / (SELECTION_NAME + ".tmp")
        tmp.write_text(json.dumps({"plan": asdict(plan), "selection": selection}, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.folder / SELECTION_NAME)

    def load_selection(self) -> tuple[IndexPlan, dict[str, Any]] | None:
        """Auto's recorded choice, or None when it has not been made yet."""
        if not (self.folder / SELECTION_NAME).is_file():
            return None
        try:
            record = json.loads((self.folder / SELECTION_NAME).read_text(encoding="utf-8"))
            plan = IndexPlan(**{**record["plan"], "reasons": tuple(record["plan"]["reasons"])})
            return plan, record["selection"]
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{self.folder / SELECTION_NAME}: not a readable record of auto's choice; build without --resume to start over") from None

    def save_trained(self, vectors: VectorIndex) -> None:
        vectors.write(self.folder)
        os.replace(self.folder / "vectors.faiss", self.folder / TRAINED_NAME)

    def trained_path(self) -> Path | None:
        return self.folder / TRAINED_NAME if (self.folder / TRAINED_NAME).is_file() else None

    def completed_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(vectors, ids) already recorded, read back chunk by chunk (copies) and checked against their sha256: one read."""
        vectors, ids = self.stream()
        start = 0
        for number, (rows, digest) in enumerate(self.chunks, start=1):
            chunk = np.array(vectors[start : start + rows]), np.array(ids[start : start + rows])
            if _chunk_digest(*chunk) != digest:
                raise DataError(f"{self._damaged()} (chunk {number} of {STREAM_VECTORS}/{STREAM_IDS} fails its sha256)")
            yield chunk
            start += rows

    def stream(self) -> tuple[np.ndarray, np.ndarray]:
        """The recorded (vectors, ids) as read-only memory maps, in corpus order."""
        if not self.done:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros(0, dtype=np.int64)
        vectors = np.memmap(self.folder / STREAM_VECTORS, dtype=np.float32, mode="r", shape=(self.done, self.dim))
        return vectors, np.memmap(self.folder / STREAM_IDS, dtype=np.int64, mode="r", shape=(self.done,))

    def record_chunk(self, vectors: np.ndarray, ids: np.ndarray, documents) -> None:
        """Persist one completed chunk (vectors, ids, texts), then count it."""
        for name, array in ((STREAM_VECTORS, vectors.astype(np.float32, copy=False)), (STREAM_IDS, ids.astype(np.int64, copy=False))):
            with open(self.folder / name, "ab") as handle:
                handle.write(array.tobytes())
                handle.flush()
                os.fsync(handle.fileno())
        self.store.add(documents, replace=True)
        self.done += len(ids)
        self.chunks.append([len(ids), _chunk_digest(vectors, ids)])
        self._record()

    def finish(self) -> Path:
        """Close the store and delete scratch files; the folder is then a complete index (minus vectors/manifest)."""
        self.store.close()
        for name in SCRATCH:
            (self.folder / name).unlink(missing_ok=True)
        return self.folder


def _chunk_digest(vectors: np.ndarray, ids: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _read_progress(record: Path) -> dict[str, Any]:
    """The progress record, or a one-line DataError when it is not one (damaged, or written by an older simsearch)."""
    try:
        progress = json.loads(record.read_text(encoding="utf-8"))
        if isinstance(progress["identity"], dict) and int(progress["documents_done"]) >= 0 and isinstance(progress["chunks"], list):
            return progress
    except (ValueError, KeyError, TypeError):
        pass
    raise DataError(f"{record}: not a readable progress record; build without --resume to start over")
