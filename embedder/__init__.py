"""Encoder stage: sentences in, float32 vectors out.

Names are imported on first use (PEP 562), so light modules such as `embedder.corpus`
load without torch or sentence-transformers and the CLI starts fast.
"""

from importlib import import_module

_EXPORTS = {
    "encode": "embedder.encoding",
    "DEFAULT_MODEL_NAME": "embedder.loading",
    "embedding_dim": "embedder.loading",
    "load_model": "embedder.loading",
    "model_reference": "embedder.loading",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
