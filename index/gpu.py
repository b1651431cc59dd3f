"""GPU placement: FAISS GPU build when it sees a GPU, else exact search as a torch matmul on CUDA, else CPU.

`gpu` modes: "auto" (use what is there), "off", "one" (first GPU), "all" (search
replicated on every GPU; training and adding use the first). Folders always hold
the CPU index; GPU copies are made on load. FAISS has no GPU HNSW (and no GPU
flat SQ8): those say so and stay on the CPU. Any FAISS GPU error falls back to
the CPU with a note instead of failing.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from errors import UsageError
from index.plan import GPU_MODES, IndexPlan
from index.vectors import ID_MAPPED, VectorIndex

NO_GPU_TYPES = {
    "hnsw": "FAISS has no GPU HNSW", "sq8": "FAISS has no GPU flat SQ8 index",
    "binary": "binary codes are searched on the CPU", "binary-hnsw": "FAISS has no GPU HNSW",
}
TORCH_QUERY_BLOCK = 256

Searcher = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def faiss_gpu_count() -> int:
    """GPUs visible to FAISS (0 with the CPU build, which has no get_num_gpus)."""
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def nvidia_device_present() -> bool:
    """An NVIDIA driver or device node is there: checked before importing torch, so CPU-only queries never pay its ~2 s import."""
    return Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def torch_cuda_available() -> bool:
    if not nvidia_device_present() or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def check_mode(mode: str) -> str:
    if mode not in GPU_MODES:
        raise UsageError(f"--gpu {mode!r}: expected one of {', '.join(GPU_MODES)}")
    return mode


@dataclass
class Placement:
    """Where a build trains and adds: the CPU, or FAISS GPU 0 (IVF types only; moved back to the CPU at the end)."""

    on_gpu: bool
    note: str

    def train(self, vectors: VectorIndex, sample: np.ndarray) -> None:
        if self.on_gpu and self._to_gpu(vectors):
            vectors.faiss_index.train(np.ascontiguousarray(sample, dtype=np.float32))
            return
        vectors.train(sample)

    def add(self, vectors: VectorIndex, embedded: np.ndarray, ids: np.ndarray) -> None:
        if self.on_gpu:
            self._to_gpu(vectors)
        vectors.add(embedded, ids)

    def _to_gpu(self, vectors: VectorIndex) -> bool:
        """Move the index to GPU 0 once; on a FAISS GPU error keep it on the CPU and say so."""
        if not hasattr(vectors.faiss_index, "getDevice"):
            try:
                vectors.faiss_index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, vectors.faiss_index)
            except RuntimeError as exc:
                self.on_gpu, self.note = False, f"CPU (FAISS GPU failed: {str(exc).splitlines()[0]})"
                warnings.warn(self.note, stacklevel=2)
                return False
        return True

    def to_cpu(self, vectors: VectorIndex) -> VectorIndex:
        """The CPU copy that gets persisted."""
        if hasattr(vectors.faiss_index, "getDevice"):
            vectors.faiss_index = faiss.index_gpu_to_cpu(vectors.faiss_index)
        return vectors

    def describe(self) -> str:
        return self.note


def place(plan: IndexPlan, mode: str) -> Placement:
    """Build placement for `plan`: FAISS GPU for IVF types when allowed and present, else CPU with the reason."""
    check_mode(mode)
    if mode == "off":
        return Placement(False, "CPU (--gpu off)")
    gpus = faiss_gpu_count()
    if not gpus:
        return Placement(False, "CPU (FAISS sees no GPU)")
    if plan.index_type in NO_GPU_TYPES:
        return Placement(False, f"CPU ({NO_GPU_TYPES[plan.index_type]})")
    if plan.index_type not in ("ivf", "ivfpq"):
        return Placement(False, "CPU (flat: adding is a copy, GPU used for search)")
    return Placement(True, "FAISS GPU 0")


def torch_exact_searcher(vectors: VectorIndex) -> Searcher:
    """Exact inner-product search as a matrix product + top-k on the CUDA device (flat indexes)."""
    import torch

    base = torch.from_numpy(vectors.inner.reconstruct_n(0, vectors.slots)).to("cuda")
    id_map = vectors.id_map()

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, base.shape[0])
        scores, labels = [], []
        for start in range(0, len(queries), TORCH_QUERY_BLOCK):
            block = torch.from_numpy(np.ascontiguousarray(queries[start : start + TORCH_QUERY_BLOCK])).to("cuda")
            top = torch.topk(block @ base.T, k, dim=1)
            scores.append(top.values.cpu().numpy())
            labels.append(top.indices.cpu().numpy())
        return np.concatenate(scores), id_map[np.concatenate(labels)]

    return search


def faiss_gpu_searcher(vectors: VectorIndex, all_gpus: bool) -> Searcher:
    """Search a GPU copy (one GPU, or replicated on all); ID-mapped flat indexes map positions to ids here."""
    source = vectors.inner if vectors.index_type in ID_MAPPED else vectors.faiss_index
    if all_gpus:
        gpu_index = faiss.index_cpu_to_all_gpus(source)
    else:
        gpu_index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, source)
    if vectors.index_type not in ID_MAPPED:
        return gpu_index.search
    id_map = vectors.id_map()

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, labels = gpu_index.search(queries, k)
        return scores, np.where(labels >= 0, id_map[np.maximum(labels, 0)], -1)

    return search


def attach_searcher(vectors: VectorIndex, mode: str) -> str:
    """Give `vectors` a GPU searcher when possible; return where searches run, in words."""
    check_mode(mode)
    if mode == "off":
        return "CPU (--gpu off)"
    if vectors.index_type in NO_GPU_TYPES:
        return f"CPU ({NO_GPU_TYPES[vectors.index_type]})" if faiss_gpu_count() or torch_cuda_available() else "CPU"
    if faiss_gpu_count():
        try:
            vectors.accelerator = faiss_gpu_searcher(vectors, mode == "all")
            return "FAISS GPU (all)" if mode == "all" else "FAISS GPU 0"
        except RuntimeError as exc:
            return f"CPU (FAISS GPU failed: {str(exc).splitlines()[0]})"
    if vectors.index_type == "flat" and torch_cuda_available():
        vectors.accelerator = torch_exact_searcher(vectors)
        return "torch CUDA (exact matmul + top-k; FAISS is the CPU build)"
    return "CPU"
