"""Change an index in place: add documents (optionally replacing existing ids) or remove ids.

Vectors (FAISS) and texts (SQLite) change in one atomic step: both are modified
in a copy of the folder that replaces it by a rename only when everything
succeeded (`atomic_update`), so a failure leaves the previous index untouched.
The folder's writer lock is taken before the manifest and ids are read, so two
writers never both pass a check that only one of them may pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from common.atomic import atomic_update, writer_folder, writer_lock
from common.chunking import chunks
from common.corpus import ID_RANGE, CorpusSpec, Document, read_corpus, scan_corpus
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


def _largest_id(folder: Path) -> int:
    store = DocStore.open(folder / STORE_NAME)
    try:
        return store.largest_id()
    finally:
        store.close()


def _finish(work: Path, manifest: Manifest, vectors: VectorIndex, change: dict) -> Manifest:
    vectors.write(work)
    manifest.floats = vectors.floats_description()
    manifest.document_count = vectors.live_count
    manifest.vector_count = vectors.slots
    manifest.source = {**manifest.source, "updates": [*manifest.source.get("updates", []), change]}
    manifest.write(work)
    return manifest


def numbered_documents(corpus: CorpusSpec, first_fresh: int) -> Iterator[Document]:
    """The corpus with each document that has no id of its own (a line number) renumbered first_fresh, first_fresh+1, …"""
    fresh = first_fresh
    for doc in read_corpus(corpus):
        if doc.numbered:
            doc, fresh = replace(doc, id=fresh, numbered=False), fresh + 1
        yield doc


def fresh_id_start(folder: Path, corpus: CorpusSpec, own: list[int], needed: int) -> int:
    """The first fresh id: after the index's and the file's own largest id (an error when int64 runs out)."""
    first = max(_largest_id(folder), max(own, default=-1)) + 1
    if needed and first + needed - 1 > ID_RANGE[1]:
        raise DataError(f"{corpus.path}: no fresh ids left after {first - 1} for {needed} documents without an id")
    return first


def add_documents(
    folder: Path, corpus: CorpusSpec, encoder: Encoder, upsert: bool = False, batch_size: int = 64, chunk_size: int = 2048,
    show_progress: bool | None = None, lock_timeout: float | None = None,
) -> Manifest:
    """Encode `corpus` with `encoder` (the index's model) and add it; an id already present is an error unless `upsert`.

    Documents without an id of their own (text lines, rows without an id column or
    field) get fresh ids after the largest id in the index or the file, recorded in
    the change as `fresh_ids` [first, last]. Everything from reading the manifest
    and checking ids to the swap happens under the folder's writer lock.
    """
    folder = writer_folder(Path(folder))
    total = scan_corpus(corpus, renumbered=True)
    own, fresh = total.own_ids, total.numbered
    with writer_lock(folder, lock_timeout):
        manifest = _check_index(folder)
        check_encoder(folder, manifest, encoder)
        first = fresh_id_start(folder, corpus, own, fresh)
        clashes = _existing_ids(folder, own)
        if clashes and not upsert:
            shown = ", ".join(map(str, clashes[:5])) + (" …" if len(clashes) > 5 else "")
            raise UsageError(
                f"{corpus.path}: {len(clashes)} id(s) already in {folder} ({shown}); pass --upsert to replace them, "
                "or give the new documents ids not in the index (documents without an id get fresh ones)"
            )
        with atomic_update(folder) as work:
            vectors = VectorIndex.read(work, manifest.index_type, manifest.search_params, floats=manifest.floats)
            store = DocStore.open_writable(work / STORE_NAME)
            with progress_bar(total.documents, "adding", "doc", show_progress) as bar:
                for chunk in chunks(numbered_documents(corpus, first), chunk_size):
                    embedded = encoder.encode([d.text for d in chunk], batch_size, show_progress=False)
                    ids = np.fromiter((d.id for d in chunk), dtype=np.int64, count=len(chunk))
                    if upsert:
                        vectors.remove(ids[np.isin(ids, clashes)])
                    vectors.add(embedded, ids)
                    store.add(chunk, replace=upsert)
                    bar.update(len(chunk))
            store.close()
            change = {
                "added": total.documents - len(clashes), "replaced": len(clashes), "corpus": str(corpus.path.resolve()),
                "backend": encoder.describe().get("backend"),  # may differ from the build's (`index add --backend`): vectors differ slightly
            }
            if fresh:
                change["fresh_ids"] = [first, first + fresh - 1]
            return _finish(work, manifest, vectors, change)


def add_lexical_index(folder: Path, lock_timeout: float | None = None) -> Manifest:
    """Give an index folder built before lexical search existed its BM25 index (from its stored texts), atomically under its writer lock.

    A folder that has one already is left as it is.
    """
    from index import lexical

    folder = writer_folder(Path(folder))
    with writer_lock(folder, lock_timeout):
        manifest = _check_index(folder)
        if manifest.lexical:
            return manifest
        with atomic_update(folder) as work:
            store = DocStore.open_writable(work / STORE_NAME)
            store.build_lexical()
            store.close()
            manifest.lexical = dict(lexical.DESCRIPTION)
            manifest.source = {**manifest.source, "updates": [*manifest.source.get("updates", []), {"lexical": "added"}]}
            manifest.write(work)
            return manifest


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


def remove_documents(folder: Path, ids: Iterable[int], lock_timeout: float | None = None) -> Manifest:
    """Remove `ids` (vectors and texts); an id not in the index is an error and nothing changes (checked under the writer lock)."""
    folder = writer_folder(Path(folder))
    wanted = sorted(set(int(i) for i in ids))
    if not wanted:
        raise UsageError("no ids to remove")
    outside = [i for i in wanted if not ID_RANGE[0] <= i <= ID_RANGE[1]]
    if outside:
        raise UsageError(f"id {outside[0]} is outside 0 … 2^63-1 (ids are non-negative int64); nothing removed")
    with writer_lock(folder, lock_timeout):
        manifest = _check_index(folder)
        missing = sorted(set(wanted) - set(_existing_ids(folder, wanted)))
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (" …" if len(missing) > 5 else "")
            raise DataError(f"{folder}: {len(missing)} id(s) not in the index ({shown}); nothing removed")
        with atomic_update(folder) as work:
            vectors = VectorIndex.read(work, manifest.index_type, manifest.search_params, floats=manifest.floats)
            vectors.remove(np.array(wanted, dtype=np.int64))
            store = DocStore.open_writable(work / STORE_NAME)
            store.remove(wanted)
            store.close()
            return _finish(work, manifest, vectors, {"removed": len(wanted)})
