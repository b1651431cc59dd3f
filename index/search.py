"""Load an index folder and answer queries: text or vectors in, ranked hits out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from sentence_transformers import SentenceTransformer

from embedder import encode, load_model
from errors import DataError, UsageError
from index.build import VECTORS_NAME
from index.manifest import Manifest
from index.store import STORE_NAME, DocStore


@dataclass(frozen=True)
class Hit:
    """One search result: document id, cosine score, text and the document's metadata."""

    id: int
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """`{"id", "score", "text", ...metadata}`: the shape `simsearch query --json` prints."""
        return {**self.metadata, "id": self.id, "score": self.score, "text": self.text}


class SearchIndex:
    """A loaded index folder. The model is loaded on the first text query only."""

    def __init__(
        self, path: Path, manifest: Manifest, vectors: faiss.Index, store: DocStore, model: SentenceTransformer | None = None
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.vectors = vectors
        self.store = store
        self._model = model

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            self._model = load_model(self.manifest.model)
        return self._model

    def search_vectors(self, queries: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """Top-k hits for each row of `queries` (already embedded with this index's model)."""
        if k < 1:
            raise UsageError(f"k must be at least 1, got {k}")
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.manifest.embedding_dim)
        scores, ids = self.vectors.search(queries, min(k, max(self.vectors.ntotal, 1)))
        docs = self.store.get([i for i in ids.ravel().tolist() if i >= 0])
        results = []
        for row_scores, row_ids in zip(scores.tolist(), ids.tolist()):
            hits = [Hit(i, s, *docs[i]) for s, i in zip(row_scores, row_ids) if i >= 0 and i in docs]
            results.append(hits)
        return results

    def search(self, queries: Sequence[str], k: int = 10, batch_size: int = 64) -> list[list[Hit]]:
        """Top-k hits for each query text."""
        return self.search_vectors(encode(self.model, queries, batch_size, normalize=self.manifest.normalized), k)


def load_index(path: Path | str, model: SentenceTransformer | None = None) -> SearchIndex:
    """Open an index folder written by `build_index`; `model` overrides loading the manifest's model."""
    path = Path(path)
    manifest = Manifest.read(path)
    for name in (VECTORS_NAME, STORE_NAME):
        if not (path / name).is_file():
            raise DataError(f"{path}: index is incomplete (no {name})")
    try:
        vectors = faiss.read_index(str(path / VECTORS_NAME))
    except RuntimeError as exc:
        raise DataError(f"{path / VECTORS_NAME}: cannot be read by FAISS ({str(exc).splitlines()[0]})") from None
    if vectors.d != manifest.embedding_dim:
        raise DataError(f"{path}: vectors have dim {vectors.d} but the manifest says {manifest.embedding_dim}")
    return SearchIndex(path, manifest, vectors, DocStore.open(path / STORE_NAME), model)
