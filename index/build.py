"""Build an index folder from a corpus: validate, encode in batches, write atomically."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import faiss
import numpy as np
from sentence_transformers import SentenceTransformer
from tqdm import tqdm

from embedder import embedding_dim, encode, load_model, model_reference
from embedder.corpus import CorpusSpec, CorpusStats, read_corpus, scan_corpus
from embedder.reduction import reduction_of
from index.atomic import atomic_folder, check_target
from index.manifest import Manifest
from index.store import STORE_NAME, DocStore

VECTORS_NAME = "vectors.faiss"


@dataclass(frozen=True)
class BuildConfig:
    """How to build: which model, how many sentences per encoder batch, whether to replace."""

    model: str | None = None
    batch_size: int = 64
    overwrite: bool = False
    show_progress: bool | None = None  # None: only on a terminal
    chunk_size: int = 2048  # documents read, encoded and added per step


def new_faiss_index(dim: int) -> faiss.Index:
    """Exact inner-product search over normalized vectors (= cosine), addressed by int64 ids."""
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def build_index(
    corpus: CorpusSpec, out_dir: Path, config: BuildConfig = BuildConfig(), model: SentenceTransformer | None = None
) -> Manifest:
    """Index every document of `corpus` into a new folder `out_dir` and return its manifest.

    The corpus is validated in a first cheap pass, so bad input fails before any
    encoding; the folder appears only when complete (see `atomic_folder`).
    """
    check_target(out_dir, config.overwrite)
    total = scan_corpus(corpus)
    model = model or load_model(config.model)
    dim = embedding_dim(model)
    vectors = new_faiss_index(dim)
    stats = CorpusStats()
    with atomic_folder(out_dir, config.overwrite) as work:
        store = DocStore.create(work / STORE_NAME)
        documents = read_corpus(corpus, stats)
        with tqdm(total=total.documents, desc="indexing", unit="doc", disable=None if config.show_progress is None else not config.show_progress) as bar:
            while chunk := list(islice(documents, config.chunk_size)):
                embedded = encode(model, [d.text for d in chunk], config.batch_size, normalize=True, show_progress=False)
                vectors.add_with_ids(embedded, np.fromiter((d.id for d in chunk), dtype=np.int64, count=len(chunk)))
                store.add(chunk)
                bar.update(len(chunk))
        store.close()
        faiss.write_index(vectors, str(work / VECTORS_NAME))
        manifest = Manifest(
            model=model_reference(config.model),
            embedding_dim=dim,
            document_count=int(vectors.ntotal),
            reduction=reduction_of(config.model),
            source={"corpus": str(corpus.path.resolve()), "blank_lines_skipped": stats.blank},
        )
        manifest.write(work)
    return manifest
