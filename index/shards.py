"""A sharded index folder: S sub-folders each holding a `vectors.faiss` over part of the ids, searched together.

Every shard is a copy of one trained (empty) index that received its own
documents under their global ids (the autofaiss recipe: train once, add
everywhere), so a query is answered by searching each shard and merging the
per-shard top k by score. Texts and metadata stay in the one `docs.sqlite`
beside the shards, and `manifest.json` lists the shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index.rescore import new_generation
from index.vectors import VECTORS_NAME, VectorIndex


def shard_name(number: int) -> str:
    return f"shard-{number:03d}"


def merge_top_k(scores: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score, id) per row over several shards' results (ids -1 pad, as FAISS does)."""
    all_scores, all_ids = np.concatenate(scores, axis=1), np.concatenate(ids, axis=1)
    all_scores = np.where(all_ids >= 0, all_scores, -np.inf)
    order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
    top_scores, top_ids = np.take_along_axis(all_scores, order, 1), np.take_along_axis(all_ids, order, 1)
    return np.where(top_ids >= 0, top_scores, -np.finfo(np.float32).max).astype(np.float32), top_ids


@dataclass
class ShardedVectors:
    """Several VectorIndex shards with one VectorIndex-like face: search merges, parameters apply to all."""

    shards: list[VectorIndex]

    @property
    def index_type(self) -> str:
        return self.shards[0].index_type

    @property
    def dim(self) -> int:
        return self.shards[0].dim

    @property
    def slots(self) -> int:
        return sum(s.slots for s in self.shards)

    @property
    def live_count(self) -> int:
        return sum(s.live_count for s in self.shards)

    @property
    def search_params(self) -> dict[str, int]:
        return self.shards[0].search_params

    @property
    def rescore(self) -> int:
        return self.shards[0].rescore

    def floats_description(self) -> dict:
        """The manifest's `floats` (each shard's file, one generation); `rows` counts them all."""
        first = self.shards[0].floats_description()
        return {**first, "rows": sum(s.floats_description()["rows"] for s in self.shards)} if first else {}

    def apply_search_params(self, params: dict[str, int]) -> None:
        for shard in self.shards:
            shard.apply_search_params(params)

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None, rescore: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top k over all shards: each shard's top k (with the same filter and rescoring), merged by score."""
        found = [shard.search(queries, k, allowed_ids, rescore) for shard in self.shards]
        return merge_top_k([f[0] for f in found], [f[1] for f in found], k)

    def write(self, folder: Path) -> list[dict[str, Any]]:
        """Write each shard into its sub-folder; return the manifest's `shards` entries."""
        described, generation = [], new_generation()
        for number, shard in enumerate(self.shards):
            sub = folder / shard_name(number)
            sub.mkdir(exist_ok=True)
            shard.write(sub, generation)
            described.append({"path": sub.name, "documents": shard.live_count, "bytes": (sub / VECTORS_NAME).stat().st_size})
        return described

    @classmethod
    def read(
        cls, folder: Path, entries: list[dict[str, Any]], index_type: str, search_params: dict[str, int], mmap: bool = False, floats: dict | None = None,
    ) -> ShardedVectors:
        return cls([VectorIndex.read(folder / entry["path"], index_type, search_params, mmap=mmap, floats=floats) for entry in entries])
