"""Float vectors kept on disk beside compressed codes, to re-score a wider candidate set by exact cosine (binary, sq8, IVF-PQ, IVF).

`floats.bin` (in each shard's sub-folder for a sharded index) is self-describing:
a 64-byte header (magic, rows, dimension, and the generation it was written in),
the ids sorted, the row of each sorted id, then the float32 rows. The manifest
records the generation (`floats`), and a reader refuses a file of another
generation, so codes are never paired with another version's floats. Readers map
the file (`np.memmap`): the floats stay on disk, and a query reads only its
candidates' rows. Changes (add, remove) are kept aside and written as a new file.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.atomic import atomic_file
from errors import DataError, UsageError

FLOATS_NAME = "floats.bin"
MAGIC = b"SSFLOAT1"
HEADER_BYTES = 64
_HEADER = struct.Struct("<8sQQ16s")  # magic, rows, dim, generation (16 raw bytes of a uuid4)
DEFAULT_RESCORE = 4  # candidates per hit re-scored by default on binary types (k x 4)
RESCORE_TYPES = ("binary", "binary-hnsw", "sq8", "ivf", "ivfpq")  # types whose codes are approximate or whose lists cut candidates
QUERY_BLOCK = 256  # queries re-scored together (bounds the gathered candidate rows in memory)


def new_generation() -> str:
    return uuid.uuid4().hex


def rescore_multiplier(index_type: str, requested: int | None) -> int:
    """The multiplier a build records: `requested` (0: off), or the type's default (4 for binary types, else off)."""
    if requested is None:
        return DEFAULT_RESCORE if index_type.startswith("binary") else 0
    if requested < 0:
        raise UsageError(f"--rescore {requested}: must be at least 1 (or off)")
    if requested and index_type not in RESCORE_TYPES:
        raise UsageError(f"--rescore applies to {', '.join(RESCORE_TYPES)}; {index_type} already scores by the exact float vectors")
    return requested


@dataclass
class FloatStore:
    """Float32 rows by id: `sorted_ids` with the `rows` they sit in, over `vectors` (a memory map once written); pending changes apart."""

    sorted_ids: np.ndarray
    rows: np.ndarray
    vectors: np.ndarray
    path: Path | None = None  # the file it was read from (named in errors)
    generation: str | None = None
    removed: set[int] = field(default_factory=set)  # ids removed since read (their rows are dropped on write)
    added: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (vectors, ids) added since read

    @classmethod
    def of(cls, vectors: np.ndarray, ids: np.ndarray, keep: np.ndarray | None = None) -> FloatStore:
        """The rows of `vectors` (a build's stream, memory-mapped) by their `ids`; `keep` (a mask) leaves the others out."""
        positions = np.arange(len(ids), dtype=np.int64) if keep is None else np.flatnonzero(keep).astype(np.int64)
        kept_ids = np.asarray(ids[positions], dtype=np.int64)
        order = np.argsort(kept_ids, kind="stable")
        return cls(kept_ids[order], positions[order], vectors)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.added.append((np.array(vectors, dtype=np.float32), np.array(ids, dtype=np.int64)))

    def remove(self, ids: np.ndarray) -> None:
        gone = np.asarray(ids, dtype=np.int64)
        self.removed.update(gone.tolist())
        self.added = [(v[~np.isin(i, gone)], i[~np.isin(i, gone)]) for v, i in self.added]

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Rows of `ids` (written rows only: searches run on a store read back or made by `of`)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return np.zeros(0, dtype=np.int64)
        where = np.minimum(np.searchsorted(self.sorted_ids, ids), len(self.sorted_ids) - 1) if len(self.sorted_ids) else np.zeros(len(ids), np.int64)
        found = np.asarray(self.sorted_ids[where]) == ids if len(self.sorted_ids) else np.zeros(len(ids), dtype=bool)
        if not found.all():
            raise DataError(f"{self.path or FLOATS_NAME}: holds no float vector for id {ids[~found][0]}: the index is damaged; run `simsearch index verify`")
        return np.asarray(self.rows[where])

    def rescore(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The top k of each row of `candidates` (ids, -1 padding) by exact inner product with its query: (scores, ids), FAISS-shaped."""
        scores = np.full((len(queries), k), -np.finfo(np.float32).max, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for start in range(0, len(queries), QUERY_BLOCK):
            block = candidates[start : start + QUERY_BLOCK]
            valid = block >= 0
            wanted, inverse = np.unique(block[valid], return_inverse=True)
            rows = self.lookup(wanted)
            order = np.argsort(rows)  # read the mapped file in row order
            gathered = np.empty((len(rows), self.dim), dtype=np.float32)
            gathered[order] = self.vectors[rows[order]]
            exact = np.full(block.shape, -np.inf, dtype=np.float32)
            exact[valid] = np.einsum("qd,qd->q", np.repeat(queries[start : start + QUERY_BLOCK], valid.sum(axis=1), axis=0), gathered[inverse])
            top = np.argsort(-exact, axis=1, kind="stable")[:, :k]
            top_scores, top_ids = np.take_along_axis(exact, top, 1), np.take_along_axis(block, top, 1)
            kept = np.isfinite(top_scores)
            scores[start : start + len(block), : top.shape[1]] = np.where(kept, top_scores, -np.finfo(np.float32).max)
            ids[start : start + len(block), : top.shape[1]] = np.where(kept, top_ids, -1)
        return scores, ids

    def write(self, folder: Path, generation: str, chunk: int = 65_536) -> None:
        """Write the rows still held plus those added as `folder/floats.bin` (`atomic_file`: renamed over it, so a map of the old file stays valid)."""
        row_ids = np.full(len(self.vectors), -1, dtype=np.int64)
        row_ids[self.rows] = self.sorted_ids  # the id of each row; rows this store does not hold are dropped below
        held = np.zeros(len(self.vectors), dtype=bool)
        held[self.rows] = True
        if self.removed:
            held[self.rows[np.isin(self.sorted_ids, np.fromiter(self.removed, dtype=np.int64))]] = False
        kept_rows = np.flatnonzero(held)
        ids = np.concatenate([row_ids[kept_rows], *(i for _, i in self.added)]).astype(np.int64)
        order = np.argsort(ids, kind="stable")
        with atomic_file(folder / FLOATS_NAME) as out:
            out.write(_HEADER.pack(MAGIC, len(ids), self.dim, bytes.fromhex(generation)).ljust(HEADER_BYTES, b"\0"))
            out.write(ids[order].tobytes())
            out.write(order.astype(np.int64).tobytes())
            for start in range(0, len(kept_rows), chunk):
                out.write(np.ascontiguousarray(self.vectors[kept_rows[start : start + chunk]], dtype=np.float32).tobytes())
            for vectors, _ in self.added:
                out.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())

    @classmethod
    def read(cls, folder: Path, generation: str, dim: int) -> FloatStore:
        """Map `folder/floats.bin`; a missing, truncated or foreign file (another generation or dimension) is a one-line DataError."""
        path = folder / FLOATS_NAME
        if not path.is_file():
            raise DataError(f"{path}: missing (the manifest records float vectors for rescoring); rebuild the index or run `simsearch index verify`")
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(HEADER_BYTES)
        if len(head) < HEADER_BYTES or head[:8] != MAGIC:
            raise DataError(f"{path}: not a simsearch float-vector file (bad header)")
        _, rows, width, token = _HEADER.unpack(head[: _HEADER.size])
        if token.hex() != generation:
            raise DataError(f"{path}: written for another version of the index (generation {token.hex()[:12]}, the manifest records {generation[:12]})")
        if width != dim:
            raise DataError(f"{path}: holds {width}-dim vectors but the index has dimension {dim}")
        expected = HEADER_BYTES + rows * 16 + rows * dim * 4
        if size != expected:
            raise DataError(f"{path}: {size} bytes but its header describes {rows} rows of dimension {dim} = {expected} bytes: truncated or damaged")
        sorted_ids = np.memmap(path, dtype=np.int64, mode="r", offset=HEADER_BYTES, shape=(rows,)) if rows else np.zeros(0, np.int64)
        order = np.memmap(path, dtype=np.int64, mode="r", offset=HEADER_BYTES + 8 * rows, shape=(rows,)) if rows else np.zeros(0, np.int64)
        vectors = np.memmap(path, dtype=np.float32, mode="r", offset=HEADER_BYTES + 16 * rows, shape=(rows, dim)) if rows else np.zeros((0, dim), np.float32)
        return cls(sorted_ids, order, vectors, path, generation)

