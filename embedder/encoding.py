"""Turn sentences into float32 vectors with a loaded sentence-transformers model."""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from sentence_transformers import SentenceTransformer

from common.progress import wants_progress
from embedder.loading import embedding_dim


def encode(
    model: SentenceTransformer,
    texts: Sequence[str],
    batch_size: int = 64,
    normalize: bool = True,
    show_progress: bool | None = None,
) -> np.ndarray:
    """Embed `texts` as a (len(texts), dim) float32 array, L2-normalized unless told otherwise."""
    if len(texts) == 0:
        return np.zeros((0, embedding_dim(model)), dtype=np.float32)
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=normalize,
        convert_to_numpy=True,
        show_progress_bar=wants_progress(show_progress, len(texts)),
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


@dataclass
class SentenceEncoder:
    """The torch backend of the encoder contract (common.encoder.Encoder): a SentenceTransformer and its name."""

    model: SentenceTransformer
    name: str
    reduction: dict[str, Any] | None = None
    backend: str = "torch"
    fingerprint: str | None = None  # of the model folder (embedder.model_files.model_fingerprint), recorded in manifests
    _counting: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def dim(self) -> int:
        return embedding_dim(self.model)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "reduction": self.reduction, "fingerprint": self.fingerprint}

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool | None = None) -> np.ndarray:
        return encode(self.model, texts, batch_size, normalize=True, show_progress=show_progress)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens after truncation, special tokens included (OpenAI's `usage`); safe beside `encode` in another thread."""
        with self._counting:
            ids = self._counter(list(texts), truncation=True, max_length=self.model.max_seq_length)["input_ids"]
        return sum(len(row) for row in ids)

    @cached_property
    def _counter(self) -> Any:
        """A private copy of the tokenizer: a call with other padding settings retunes a fast tokenizer in place, which
        breaks an `encode` running in another thread on the shared one (the server counts while a batch encodes)."""
        return copy.deepcopy(self.model.tokenizer)
