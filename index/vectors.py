"""The FAISS side of an index folder: create from a plan, add/remove by int64 id, search with filters, persist.

Flat, SQ8 and HNSW indexes sit inside an `IndexIDMap2` (internal position → id);
IVF indexes store ids in their inverted lists. Binary types keep the sign bits of
the vectors (`binary_codes`) in a FAISS binary index inside an `IndexBinaryIDMap2`,
compared by Hamming distance h and scored cos(π·h/d), the angle that h estimates.
FAISS's HNSW graphs cannot remove vectors, so removal there writes a *tombstone*
(the internal position is kept in `tombstones.npy` and excluded from every search
with an ID selector); the graph is rebuilt from its stored codes once tombstones
pass `COMPACT_FRACTION`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from errors import DataError, WriteFailed
from index.plan import BINARY_TYPES, IndexPlan
from index.rescore import FLOATS_NAME, FloatStore, new_generation

VECTORS_NAME = "vectors.faiss"
TOMBSTONES_NAME = "tombstones.npy"
COMPACT_FRACTION = 0.25
ID_MAPPED = ("flat", "sq8", "hnsw", *BINARY_TYPES)
GRAPH_TYPES = ("hnsw", "binary-hnsw")  # removal writes tombstones
# Below this many queries FAISS runs single-threaded: waking OpenMP threads costs more than it saves
# (one HNSW query on 2 busy cores: ~130-290 QPS with 2 threads, ~9,600 with 1).
SINGLE_THREAD_BELOW = 16


@contextmanager
def faiss_threads_for(queries: int) -> Iterator[None]:
    """Run FAISS with one OpenMP thread for tiny batches, restoring the previous count afterwards."""
    if queries >= SINGLE_THREAD_BELOW:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


@dataclass
class VectorIndex:
    """A FAISS index plus what FAISS cannot hold itself: its type, tuned search parameters and HNSW tombstones."""

    faiss_index: faiss.Index
    index_type: str
    search_params: dict[str, int] = field(default_factory=dict)
    tombstones: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # A GPU search (see index.gpu) used for unfiltered queries; filters always run on the CPU index.
    accelerator: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None
    # The float vectors (memory-mapped `floats.bin`) that re-score k x search_params["rescore"] candidates (index.rescore).
    floats: FloatStore | None = None

    @classmethod
    def create(cls, plan: IndexPlan, dim: int) -> VectorIndex:
        """An empty (untrained) index for `plan`, inner product over normalized vectors (= cosine), or Hamming over their sign bits."""
        if plan.index_type in BINARY_TYPES:  # the binary factory has no IDMap2 prefix: wrap it here
            built = faiss.IndexBinaryIDMap2(faiss.index_binary_factory(dim, plan.factory.removeprefix("BIDMap2,")))
        else:
            built = faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
        vectors = cls(built, plan.index_type)  # the factory already returns the concrete (downcast) class
        if plan.index_type in GRAPH_TYPES:
            vectors.inner.hnsw.efConstruction = plan.params["efConstruction"]
        return vectors

    @property
    def binary(self) -> bool:
        return self.index_type in BINARY_TYPES

    def copy(self) -> VectorIndex:
        """An independent copy (a trained empty index handed to each shard)."""
        if self.binary:  # clone_binary_index cannot clone an IDMap2
            return VectorIndex(faiss.deserialize_index_binary(faiss.serialize_index_binary(self.faiss_index)), self.index_type)
        return VectorIndex(faiss.clone_index(self.faiss_index), self.index_type)

    def codes(self, vectors: np.ndarray) -> np.ndarray:
        """What FAISS stores for `vectors`: float32 rows, or for binary types their sign bits."""
        return binary_codes(vectors) if self.binary else np.ascontiguousarray(vectors, dtype=np.float32)

    @property
    def dim(self) -> int:
        return int(self.faiss_index.d)  # a binary index's d counts bits: one per dimension

    @property
    def inner(self) -> faiss.Index:
        """The index that holds the codes (inside the IDMap2 for flat/sq8/hnsw and the binary types)."""
        if self.binary:
            return faiss.downcast_IndexBinary(self.faiss_index.index)
        return faiss.downcast_index(self.faiss_index.index) if self.index_type in ID_MAPPED else self.faiss_index

    @property
    def slots(self) -> int:
        """Stored vectors, tombstoned ones included."""
        return int(self.faiss_index.ntotal)

    @property
    def live_count(self) -> int:
        return self.slots - len(self.tombstones)

    @property
    def rescore(self) -> int:
        """Candidates per hit re-scored by the float vectors (0: off)."""
        return int(self.search_params.get("rescore", 0)) if self.floats is not None else 0

    def floats_description(self) -> dict:
        """The manifest's `floats`: the file and the generation it was written in ({} without float vectors)."""
        return {} if self.floats is None else {"file": FLOATS_NAME, "generation": self.floats.generation, "rows": len(self.floats.sorted_ids)}

    def needs_training(self) -> bool:
        return not self.faiss_index.is_trained

    def train(self, sample: np.ndarray) -> None:
        self.faiss_index.train(np.ascontiguousarray(sample, dtype=np.float32))

    def id_map(self) -> np.ndarray:
        """Id of each internal position (ID-mapped types only)."""
        return faiss.vector_to_array(self.faiss_index.id_map).astype(np.int64, copy=False)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.faiss_index.add_with_ids(self.codes(vectors), np.ascontiguousarray(ids, dtype=np.int64))
        if self.floats is not None:
            self.floats.add(vectors, ids)

    def remove(self, ids: np.ndarray) -> None:
        """Remove the vectors of `ids` (tombstones for HNSW graphs, compacted when they pile up)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return
        if self.floats is not None:
            self.floats.remove(ids)
        if self.index_type not in GRAPH_TYPES:
            self.faiss_index.remove_ids(faiss.IDSelectorBatch(ids))
            return
        hit = np.flatnonzero(np.isin(self.id_map(), ids))
        self.tombstones = np.union1d(self.tombstones, hit).astype(np.int64)
        if len(self.tombstones) > COMPACT_FRACTION * self.slots:
            self.compact()

    def compact(self) -> None:
        """Rebuild the HNSW graph from its live stored codes, dropping tombstones (same M and efConstruction)."""
        live = np.setdiff1d(np.arange(self.slots), self.tombstones)
        stored = self.inner.reconstruct_n(0, self.slots)[live] if self.slots else None  # float32 rows, or packed bits for binary-hnsw
        ids = self.id_map()[live]
        old = self.inner.hnsw
        m = old.nb_neighbors(1)
        prefix = "BIDMap2,B" if self.binary else "IDMap2,"
        plan = IndexPlan(self.index_type, f"{prefix}HNSW{m}", {"M": m, "efConstruction": old.efConstruction}, "efSearch")
        rebuilt = VectorIndex.create(plan, self.dim)
        rebuilt.inner.hnsw.efSearch = old.efSearch
        self.faiss_index, self.tombstones = rebuilt.faiss_index, np.zeros(0, dtype=np.int64)
        if len(ids):
            self.faiss_index.add_with_ids(np.ascontiguousarray(stored), ids)

    def apply_search_params(self, params: dict[str, int]) -> None:
        """Set the tuned nprobe / efSearch (and the rescore multiplier) used by every later search; other parameters stay."""
        self.search_params = {**self.search_params, **params}
        if "nprobe" in params:
            self.faiss_index.nprobe = int(params["nprobe"])
        if "efSearch" in params:
            self.inner.hnsw.efSearch = int(params["efSearch"])

    def _faiss_params(self, selector: faiss.IDSelector | None) -> faiss.SearchParameters:
        if self.index_type in ("ivf", "ivfpq"):
            return faiss.SearchParametersIVF(sel=selector, nprobe=int(self.faiss_index.nprobe))
        if self.index_type in GRAPH_TYPES:
            return faiss.SearchParametersHNSW(sel=selector, efSearch=int(self.inner.hnsw.efSearch))
        return faiss.SearchParameters(sel=selector)

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None, rescore: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the top k per query row; ids -1 pad rows with fewer hits. `allowed_ids` restricts hits; `rescore` overrides the multiplier."""
        multiplier = self.rescore if rescore is None or self.floats is None else rescore
        with faiss_threads_for(len(queries)):
            scores, ids = self._search(self.codes(queries), k * multiplier or k, allowed_ids)
        if multiplier:
            return self.floats.rescore(np.asarray(queries, dtype=np.float32), ids, k)
        return (hamming_scores(scores, ids, self.dim), ids) if self.binary else (scores, ids)

    def _search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if allowed_ids is None and not len(self.tombstones):
            return (self.accelerator or self.faiss_index.search)(queries, k)
        if self.index_type not in ID_MAPPED:
            selector = faiss.IDSelectorBatch(np.asarray(allowed_ids, dtype=np.int64))  # must outlive the search
            return self.faiss_index.search(queries, k, params=self._faiss_params(selector))
        # Select internal positions, so an id re-added after a tombstone is not hidden with its old copy.
        id_map = self.id_map()
        keep = np.ones(self.slots, dtype=bool) if allowed_ids is None else np.isin(id_map, allowed_ids)
        keep[self.tombstones] = False
        bitmap = np.packbits(keep, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(keep), faiss.swig_ptr(bitmap))
        scores, labels = self.inner.search(queries, k, params=self._faiss_params(selector))
        return scores, np.where(labels >= 0, id_map[np.maximum(labels, 0)], -1)

    def write(self, folder: Path, generation: str | None = None) -> None:
        """FAISS codes, tombstones and float vectors into `folder` (the floats under `generation`, a new one by default, then mapped from there)."""
        if self.floats is not None:
            generation = generation or new_generation()
            self.floats.write(folder, generation)
            self.floats = FloatStore.read(folder, generation, self.dim)
        else:
            (folder / FLOATS_NAME).unlink(missing_ok=True)
        try:
            (faiss.write_index_binary if self.binary else faiss.write_index)(self.faiss_index, str(folder / VECTORS_NAME))
        except RuntimeError as exc:  # FAISS reports a full or read-only disk as a C++ assertion
            raise WriteFailed(f"{folder / VECTORS_NAME}: FAISS could not write it ({str(exc).strip().splitlines()[0]}): is the disk full?") from None
        if len(self.tombstones):
            np.save(folder / TOMBSTONES_NAME, self.tombstones)
        else:
            (folder / TOMBSTONES_NAME).unlink(missing_ok=True)  # an update works on a copy that may hold old ones

    @classmethod
    def read(
        cls, folder: Path, index_type: str, search_params: dict[str, int], mmap: bool = False, name: str = VECTORS_NAME, floats: dict | None = None,
    ) -> VectorIndex:
        """Load from `folder`; `mmap` maps the codes from disk read-only instead of reading them into memory; `floats` (the manifest's) maps the float vectors."""
        # IVF maps its inverted lists (IO_FLAG_MMAP); flat, SQ8 and HNSW storage are flat codes (IO_FLAG_MMAP_IFC).
        flags = (faiss.IO_FLAG_MMAP_IFC if index_type in ID_MAPPED else faiss.IO_FLAG_MMAP) | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            loaded = (faiss.read_index_binary if index_type in BINARY_TYPES else faiss.read_index)(str(folder / name), flags)
        except RuntimeError as exc:
            raise DataError(f"{folder / name}: cannot be read by FAISS ({str(exc).strip().splitlines()[0]})") from None
        vectors = cls(loaded, index_type, {}, read_tombstones(folder / TOMBSTONES_NAME, int(loaded.ntotal)))
        if floats:
            vectors.floats = FloatStore.read(folder, floats["generation"], vectors.dim)
        vectors.apply_search_params(search_params)
        return vectors


def binary_codes(vectors: np.ndarray) -> np.ndarray:
    """The sign bits of each row, packed eight to a byte: what binary indexes store and query with."""
    return np.packbits(np.asarray(vectors) > 0, axis=1)


def hamming_scores(distances: np.ndarray, ids: np.ndarray, dim: int) -> np.ndarray:
    """Hamming distances as cosine estimates cos(π·h/d) (same order; padding rows, id -1, get FAISS's lowest score)."""
    scores = np.cos(np.pi * distances.astype(np.float32) / dim).astype(np.float32)
    return np.where(ids >= 0, scores, -np.finfo(np.float32).max).astype(np.float32)


def read_tombstones(path: Path, slots: int) -> np.ndarray:
    """HNSW tombstones: positions in [0, slots) stored as a plain int64 array (never unpickled)."""
    if not path.is_file():
        return np.zeros(0, dtype=np.int64)
    try:
        tombstones = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a plain integer array ({str(exc).splitlines()[0]})") from None
    if tombstones.ndim != 1 or tombstones.dtype.kind not in "iu" or (len(tombstones) and not 0 <= tombstones.min() <= tombstones.max() < slots):
        raise DataError(f"{path}: expected a 1-d array of positions below {slots}, found {tombstones.dtype} of shape {tombstones.shape}")
    return tombstones.astype(np.int64)
