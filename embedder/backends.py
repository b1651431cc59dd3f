"""Pick an encoder backend by name; only the chosen backend's libraries are imported."""

from __future__ import annotations

from common.encoder import Encoder
from embedder.model_files import model_fingerprint, model_reference, reduction_of
from errors import UsageError

BACKENDS = ("torch",)
DEFAULT_BACKEND = "torch"


def load_encoder(name: str | None = None, device: str | None = None, backend: str = DEFAULT_BACKEND) -> Encoder:
    """The encoder (see common.encoder) for a model name: what index/, eval/ and the server take."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    from embedder.encoding import SentenceEncoder
    from embedder.loading import load_model

    return SentenceEncoder(load_model(name, device), model_reference(name), reduction_of(name), fingerprint=model_fingerprint(name))
