"""The re-ranker contract: what eval/ and index/ need from a cross-encoder, which scores a pair read together.

`embedder.reranking` loads one (sentence-transformers' CrossEncoder); eval/ and index/ take
one and never load a model themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np


@runtime_checkable
class Reranker(Protocol):
    """Pairs of texts in, one relevance score per pair out (higher is more related), in input order."""

    @property
    def name(self) -> str:
        """The model reference, for the record."""
        ...

    def describe(self) -> dict[str, Any]:
        """Provenance: model, kind, backend."""
        ...

    def score_pairs(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        """The score of each (first, second) pair: float32, shape (len(pairs),)."""
        ...
