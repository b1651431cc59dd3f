"""The FAISS side of an index folder: create from a plan, add/remove by int64 id, search with filters, persist.

Flat, SQ8 and HNSW indexes sit inside an `IndexIDMap2` (internal position → id);
IVF indexes store ids in their inverted lists. FAISS's HNSW cannot remove
vectors, so removal there writes a *tombstone* (the internal position is kept in
`tombstones.npy` and excluded from every search with an ID selector); the graph
is rebuilt from its stored vectors once tombstones pass `COMPACT_FRACTION`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from errors import DataError, WriteFailed
from index.plan import IndexPlan

VECTORS_NAME = "vectors.faiss"
TOMBSTONES_NAME = "tombstones.npy"
COMPACT_FRACTION = 0.25
ID_MAPPED = ("flat", "sq8", "hnsw")
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

    @classmethod
    def create(cls, plan: IndexPlan, dim: int) -> VectorIndex:
        """An empty (untrained) index for `plan`, inner product over normalized vectors (= cosine)."""
        built = faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
        if plan.index_type == "hnsw":
            faiss.downcast_index(built.index).hnsw.efConstruction = plan.params["efConstruction"]
        return cls(built, plan.index_type)  # the factory already returns the concrete (downcast) class

    @property
    def dim(self) -> int:
        return int(self.faiss_index.d)

    @property
    def inner(self) -> faiss.Index:
        """The index that holds the codes (inside the IDMap2 for flat/sq8/hnsw)."""
        return faiss.downcast_index(self.faiss_index.index) if self.index_type in ID_MAPPED else self.faiss_index

    @property
    def slots(self) -> int:
        """Stored vectors, tombstoned ones included."""
        return int(self.faiss_index.ntotal)

    @property
    def live_count(self) -> int:
        return self.slots - len(self.tombstones)

    def needs_training(self) -> bool:
        return not self.faiss_index.is_trained

    def train(self, sample: np.ndarray) -> None:
        self.faiss_index.train(np.ascontiguousarray(sample, dtype=np.float32))

    def id_map(self) -> np.ndarray:
        """Id of each internal position (ID-mapped types only)."""
        return faiss.vector_to_array(self.faiss_index.id_map).astype(np.int64, copy=False)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.faiss_index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        """Remove the vectors of `ids` (tombstones for HNSW, compacted when they pile up)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return
        if self.index_type != "hnsw":
            self.faiss_index.remove_ids(faiss.IDSelectorBatch(ids))
            return
        hit = np.flatnonzero(np.isin(self.id_map(), ids))
        self.tombstones = np.union1d(self.tombstones, hit).astype(np.int64)
        if len(self.tombstones) > COMPACT_FRACTION * self.slots:
            self.compact()

    def compact(self) -> None:
        """Rebuild the HNSW graph from its live stored vectors, dropping tombstones (same M and efConstruction)."""
        live = np.setdiff1d(np.arange(self.slots), self.tombstones)
        vectors = self.inner.reconstruct_n(0, self.slots)[live] if self.slots else np.zeros((0, self.dim), np.float32)
        ids = self.id_map()[live]
        old = self.inner.hnsw
        rebuilt = faiss.index_factory(self.dim, f"IDMap2,HNSW{old.nb_neighbors(1)}", faiss.METRIC_INNER_PRODUCT)
        graph = faiss.downcast_index(rebuilt.index).hnsw
        graph.efConstruction, graph.efSearch = old.efConstruction, old.efSearch
        self.faiss_index, self.tombstones = rebuilt, np.zeros(0, dtype=np.int64)
        self.add(vectors, ids)

    def apply_search_params(self, params: dict[str, int]) -> None:
        """Set the tuned nprobe / efSearch used by every later search."""
        self.search_params = dict(params)
        if "nprobe" in params:
            self.faiss_index.nprobe = int(params["nprobe"])
        if "efSearch" in params:
            self.inner.hnsw.efSearch = int(params["efSearch"])

    def _faiss_params(self, selector: faiss.IDSelector | None) -> faiss.SearchParameters:
        if self.index_type in ("ivf", "ivfpq"):
            return faiss.SearchParametersIVF(sel=selector, nprobe=int(self.faiss_index.nprobe))
        if self.index_type == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=int(self.inner.hnsw.efSearch))
        return faiss.SearchParameters(sel=selector)

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the top k per query row; ids -1 pad rows with fewer hits. `allowed_ids` restricts hits."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        with faiss_threads_for(len(queries)):
            return self._search(queries, k, allowed_ids)

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

    def write(self, folder: Path) -> None:
        try:
            faiss.write_index(self.faiss_index, str(folder / VECTORS_NAME))
        except RuntimeError as exc:  # FAISS reports a full or read-only disk as a C++ assertion
            raise WriteFailed(f"{folder / VECTORS_NAME}: FAISS could not write it ({str(exc).strip().splitlines()[0]}): is the disk full?") from None
        if len(self.tombstones):
            np.save(folder / TOMBSTONES_NAME, self.tombstones)
        else:
            (folder / TOMBSTONES_NAME).unlink(missing_ok=True)  # an update works on a copy that may hold old ones

    @classmethod
    def read(cls, folder: Path, index_type: str, search_params: dict[str, int], mmap: bool = False, name: str = VECTORS_NAME) -> VectorIndex:
        """Load from `folder`; `mmap` maps the codes from disk read-only instead of reading them into memory."""
        # IVF maps its inverted lists (IO_FLAG_MMAP); flat, SQ8 and HNSW storage are flat codes (IO_FLAG_MMAP_IFC).
        flags = (faiss.IO_FLAG_MMAP_IFC if index_type in ID_MAPPED else faiss.IO_FLAG_MMAP) | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            loaded = faiss.read_index(str(folder / name), flags)
        except RuntimeError as exc:
            raise DataError(f"{folder / name}: cannot be read by FAISS ({str(exc).strip().splitlines()[0]})") from None
        vectors = cls(loaded, index_type, {}, read_tombstones(folder / TOMBSTONES_NAME, int(loaded.ntotal)))
        vectors.apply_search_params(search_params)
        return vectors


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
