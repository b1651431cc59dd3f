"""Turn sentences into float32 vectors with a loaded model."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from sentence_transformers import SentenceTransformer

from embedder.loading import embedding_dim

# Inputs at least this long get a progress bar (on a terminal) unless the caller decides otherwise.
PROGRESS_THRESHOLD = 1000


def encode(
    model: SentenceTransformer,
    texts: Sequence[str],
    batch_size: int = 64,
    normalize: bool = True,
    show_progress: bool | None = None,
) -> np.ndarray:
    """Embed `texts` as a (len(texts), dim) float32 array, L2-normalized unless told otherwise."""
    if show_progress is None:
        show_progress = len(texts) >= PROGRESS_THRESHOLD and sys.stderr.isatty()
    if len(texts) == 0:
        return np.zeros((0, embedding_dim(model)), dtype=np.float32)
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=normalize,
        convert_to_numpy=True,
        show_progress_bar=show_progress,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)
