"""The encoder contract: what index/, eval/, the server and the Ray engine need from a model.

Any object with these members is an encoder: the torch backend
(`embedder.encoding.SentenceEncoder`), an ONNX backend, a batching wrapper in a
server or an actor pool. index/ takes one of these (or plain vectors) and never
loads a model itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: `simsearch --help` imports this module and need not load numpy
    import numpy as np


@runtime_checkable
class Encoder(Protocol):
    """Sentences in, L2-normalized float32 vectors of shape (len(texts), dim) out, in input order."""

    @property
    def name(self) -> str:
        """The model reference recorded in manifests (stable across machines for the bundled default)."""
        ...

    @property
    def dim(self) -> int:
        """Output dimension of `encode`."""
        ...

    def describe(self) -> dict[str, Any]:
        """Provenance recorded beside the vectors: backend, reduction, fingerprint (of the model files, see
        embedder.model_files.model_fingerprint; None or absent when unknown) and anything else that changes them."""
        ...

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool | None = None) -> np.ndarray:
        """Embed `texts`; `show_progress` None means: a bar on a terminal for long inputs."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> int:
        """How many tokens the model reads for `texts` (special tokens included, after truncation): the server's usage figure.

        Must be safe to call while `encode` runs in another thread (the server counts while a batch encodes)."""
        ...
