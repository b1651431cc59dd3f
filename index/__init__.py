"""Index stage: vectors and texts persisted in a folder, searched with FAISS."""

from index.build import BuildConfig, build_index
from index.manifest import Manifest
from index.quality import recall_at_k
from index.search import Hit, SearchIndex, load_index

__all__ = ["BuildConfig", "Hit", "Manifest", "SearchIndex", "build_index", "load_index", "recall_at_k"]
