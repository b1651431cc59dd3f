"""Encoder stage: sentences in, float32 vectors out.

Names are imported on first use (PEP 562), so light modules such as `embedder.model_files`
load without torch or sentence-transformers and the CLI starts fast.
"""

from importlib import import_module

_EXPORTS = {
    "encode": "embedder.encoding",
    "SentenceEncoder": "embedder.encoding",
    "DEFAULT_MODEL_NAME": "embedder.model_files",
    "model_reference": "embedder.model_files",
    "embedding_dim": "embedder.loading",
    "load_encoder": "embedder.backends",
    "load_model": "embedder.loading",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
