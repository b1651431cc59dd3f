"""Index stage: vectors and texts persisted in a folder, searched with FAISS.

Names are imported on first use (PEP 562), so light modules such as `index.plan`
load without torch or sentence-transformers and the CLI starts fast.
"""

from importlib import import_module

_EXPORTS = {
    "BuildConfig": "index.build",
    "build_index": "index.build",
    "Manifest": "index.manifest",
    "Hit": "index.search",
    "SearchIndex": "index.search",
    "load_index": "index.search",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
