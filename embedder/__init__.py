"""Encoder stage: sentences in, float32 vectors out."""

from embedder.encoding import encode
from embedder.loading import DEFAULT_MODEL_NAME, embedding_dim, load_model, model_reference

__all__ = ["DEFAULT_MODEL_NAME", "embedding_dim", "encode", "load_model", "model_reference"]
