"""Change an index in place: add documents (optionally replacing existing ids) or remove ids.

Vectors (FAISS) and texts (SQLite) change in one atomic step: both are modified
in a copy of the folder that replaces it by a rename only when everything
succeeded (`atomic_update`), so a failure leaves the previous index untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from common.atomic import atomic_update
from common.chunking import chunks
from common.corpus import CorpusSpec, read_corpus, scan_corpus
from common.encoder import Encoder
from common.progress import progress_bar
from errors import DataError, UsageError
from index.manifest import Manifest
from index.search import check_encoder
from index.store import STORE_NAME, DocStore
from index.vectors import VectorIndex


def _check_index(folder: Path) -> Manifest:
    manifest = Manifest.read(folder)
    if not (folder / STORE_NAME).is_file():
        raise DataError(f"{folder}: index is incomplete (no {STORE_NAME})")
    return manifest


def _existing_ids(folder: Path, ids: Iterable[int]) -> list[int]:
    store = DocStore.open(folder / STORE_NAME)
    try:
        found: list[int] = []
        for chunk in chunks(ids, 10_000):
            found += sorted(store.existing(chunk))
        return found
    finally:
        store.close()


def _finish(work: Path, manifest: Manifest, vectors: VectorIndex, change: dict) -> Manifest:
    vectors.write(work)
    manifest.document_count = vectors.live_count
    manifest.vector_count = vectors.slots
    manifest.source = {**manifest.source, "updates": [*manifest.source.get("updates", []), change]}
    manifest.write(work)
    return manifest


def add_documents(
    folder: Path, corpus: CorpusSpec, encoder: Encoder, upsert: bool = False, batch_size: int = 64, chunk_size: int = 2048,
    show_progress: bool | None = None,
) -> Manifest:
    """Encode `corpus` with `encoder` (the index's model) and add it; an id already present is an error unless `upsert`."""
    folder = Path(folder)
    manifest = _check_index(folder)
    total = scan_corpus(corpus)
    clashes = _existing_ids(folder, (d.id for d in read_corpus(corpus)))
    if clashes and not upsert:
        shown = ", ".join(map(str, clashes[:5])) + (" …" if len(clashes) > 5 else "")
        raise UsageError(f"{corpus.path}: {len(clashes)} id(s) already in {folder} ({shown}); pass --upsert to replace them, or give new documents their own ids (--id-column)")
    check_encoder(folder, manifest, encoder)
    with atomic_update(folder) as work:
        vectors = VectorIndex.read(work, manifest.index_type, manifest.search_params)
        store = DocStore.open_writable(work / STORE_NAME)
        with progress_bar(total.documents, "adding", "doc", show_progress) as bar:
            for chunk in chunks(read_corpus(corpus), chunk_size):
                embedded = encoder.encode([d.text for d in chunk], batch_size, show_progress=False)
                ids = np.fromiter((d.id for d in chunk), dtype=np.int64, count=len(chunk))
                if upsert:
                    vectors.remove(ids[np.isin(ids, clashes)])
                vectors.add(embedded, ids)
                store.add(chunk, replace=upsert)
                bar.update(len(chunk))
        store.close()
        return _finish(work, manifest, vectors, {
            "added": total.documents - len(clashes), "replaced": len(clashes), "corpus": str(corpus.path.resolve()),
            "backend": encoder.describe().get("backend"),  # may differ from the build's (`index add --backend`): vectors differ slightly
        })


def read_ids_file(path: Path) -> list[int]:
    """Ids, one per line (blank lines skipped); a line that is not an integer is an error naming it."""
    ids = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                ids.append(int(line.strip()))
            except ValueError:
                raise DataError(f"{path}:{lineno}: {line.strip()!r} is not an integer id") from None
    return ids


def remove_documents(folder: Path, ids: Iterable[int]) -> Manifest:
    """Remove `ids` (vectors and texts); an id not in the index is an error and nothing changes."""
    folder = Path(folder)
    manifest = _check_index(folder)
    wanted = sorted(set(int(i) for i in ids))
    if not wanted:
        raise UsageError("no ids to remove")
    missing = sorted(set(wanted) - set(_existing_ids(folder, wanted)))
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (" …" if len(missing) > 5 else "")
        raise DataError(f"{folder}: {len(missing)} id(s) not in the index ({shown}); nothing removed")
    with atomic_update(folder) as work:
        vectors = VectorIndex.read(work, manifest.index_type, manifest.search_params)
        vectors.remove(np.array(wanted, dtype=np.int64))
        store = DocStore.open_writable(work / STORE_NAME)
        store.remove(wanted)
        store.close()
        return _finish(work, manifest, vectors, {"removed": len(wanted)})
