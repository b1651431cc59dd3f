"""The served indexes: name → loaded `SearchIndex`, one shared encoder per model, atomic reloads."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.encoder import Encoder
from common.reranker import Reranker
from index.manifest import MANIFEST_NAME, Manifest
from index.search import SearchIndex
from simsearch.api import index_encoder, open_index

if TYPE_CHECKING:  # Ray is imported only when the server runs with --engine ray
    from distributed.serving import ShardDeployer

log = logging.getLogger("simsearch.serve")

EncoderKey = tuple[str, str]  # (model reference, backend): indexes with the same key share one encoder
EncoderFactory = Callable[[Manifest, str], Encoder]  # (manifest, backend) → the encoder for that index's model


def make_index_encoder(manifest: Manifest, backend: str) -> Encoder:
    """The index's model on `backend` (the default factory)."""
    return index_encoder(manifest, backend=backend)


def load_rerankers(folders: Sequence[Path], backend: str = "torch") -> dict[str, Reranker]:
    """The `--rerank-model` cross-encoders by folder name on `backend`, in order (a sentence encoder's folder is refused in one line)."""
    from embedder.reranking import load_reranker

    rerankers = {folder.name: load_reranker(str(folder), backend) for folder in folders}
    for name, reranker in rerankers.items():
        log.info("loaded re-ranker %s (%s)", name, reranker.name)
    return rerankers


Stamp = tuple[int, int, int]


def manifest_stamp(folder: Path) -> Stamp | None:
    """(inode, mtime_ns, size) of the manifest: an atomic swap or rewrite changes it; None while the folder is missing."""
    try:
        stat = (folder / MANIFEST_NAME).stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


@dataclass(frozen=True)
class Served:
    """One loaded index: what a search reads. Replaced whole on reload, never changed in place."""

    name: str
    folder: Path
    index: SearchIndex
    encoder_key: EncoderKey
    fields: frozenset[str]
    stamp: Stamp | None
    loaded_at: float


class Registry:
    """Index folders served by name; a reload loads the new folder completely, then swaps one reference."""

    def __init__(self, make_encoder: EncoderFactory = make_index_encoder, backend: str | None = None, deployer: ShardDeployer | None = None) -> None:
        self._make_encoder = make_encoder
        self.backend = backend  # None: each index's own backend
        self.deployer = deployer  # --engine ray: each index's shards are Ray Serve deployments; None: vectors in this process
        self.encoders: dict[EncoderKey, Encoder] = {}
        self.entries: dict[str, Served] = {}

    @classmethod
    def load(
        cls, folders: Sequence[Path], make_encoder: EncoderFactory = make_index_encoder, backend: str | None = None, deployer: ShardDeployer | None = None,
    ) -> Registry:
        """Load every folder (in order: the first one answers `/search`), sharing encoders between equal models and backends."""
        registry = cls(make_encoder, backend, deployer)
        for folder in folders:
            registry.reload(folder.name, Path(folder))
        return registry

    def encoder_for(self, manifest: Manifest) -> tuple[EncoderKey, Encoder]:
        """The shared encoder of a manifest's model and backend (or the registry's override), loaded on first use."""
        key = (manifest.model, self.backend or manifest.backend)
        if key not in self.encoders:
            self.encoders[key] = self._make_encoder(manifest, key[1])
        return key, self.encoders[key]

    def reload(self, name: str, folder: Path | None = None) -> Served:
        """Load the folder as it is now and swap it in; until this returns, searches use the previous one."""
        folder = folder or self.entries[name].folder
        stamp = manifest_stamp(folder)
        key, encoder = self.encoder_for(Manifest.read(folder))
        if self.deployer is None:
            index = open_index(folder, encoder=encoder)
        else:
            try:
                index = open_index(folder, encoder=encoder, open_vectors=self.deployer.opener(name))
            except BaseException:
                self.deployer.discard(name)
                raise
            self.deployer.adopt(name)
        served = Served(name, folder, index, key, frozenset(index.store.metadata_fields()), stamp, time.time())
        self.entries[name] = served  # one reference assignment: atomic for every reader
        log.info("loaded %s (%d documents) from %s", name, index.manifest.document_count, folder)
        return served

    def stale(self) -> list[str]:
        """Names whose manifest changed on disk since they were loaded (and whose folder is there now)."""
        return [name for name, served in self.entries.items() if (now := manifest_stamp(served.folder)) is not None and now != served.stamp]

    def missing(self) -> list[str]:
        """Names whose folder (its manifest) is gone from disk: still answered from memory, but no longer what the folder says."""
        return [name for name, served in self.entries.items() if manifest_stamp(served.folder) is None]

    def degraded(self) -> list[str]:
        """`INDEX/shard-NNN` of every shard deployment with no live replica (--engine ray only: asks Serve's controller)."""
        assert self.deployer is not None, "one process has no shard deployments"
        return self.deployer.unavailable()

    def first(self) -> Served:
        return next(iter(self.entries.values()))
