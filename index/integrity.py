"""Checksums of an index folder's files: recorded in the manifest on every write, sizes checked on load, hashes on `index verify`."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import OWNER_MARK
from common.hashing import sha256_of
from errors import DataError


def file_digests(folder: Path, skip: str = "manifest.json") -> dict[str, dict[str, Any]]:
    """{path relative to `folder`: {"bytes", "sha256"}} for every file under it (shards too) except the manifest, which cannot hold its own, and the owner mark."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
        for p in sorted(folder.rglob("*")) if p.is_file() and p.relative_to(folder).as_posix() not in (skip, OWNER_MARK)
    }


def check_sizes(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    """The cheap check on every load: each recorded file is there with its recorded size (an older index records none)."""
    for name, record in files.items():
        path = Path(folder) / name
        if not path.is_file():
            raise DataError(f"{path}: missing (the manifest records it); run `simsearch index verify`")
        if path.stat().st_size != record["bytes"]:
            raise DataError(f"{path}: {path.stat().st_size} bytes but the manifest records {record['bytes']}: the index is damaged")


@dataclass(frozen=True)
class Verified:
    """What `index verify` checked: files hashed and documents counted."""

    files: int
    documents: int

    def summary(self) -> str:
        return f"{self.files} files match their checksums, {self.documents} documents in SQLite and FAISS"


def verify_files(folder: Path, files: dict[str, dict[str, Any]]) -> int:
    """Recompute every recorded sha256 (the full check of `index verify`); the first mismatch is a one-line DataError."""
    if not files:
        raise DataError(f"{folder}: the manifest records no checksums (built by an older simsearch); rebuild or add/remove once to record them")
    check_sizes(folder, files)
    for name, record in files.items():
        if sha256_of(Path(folder) / name) != record["sha256"]:
            raise DataError(f"{Path(folder) / name}: sha256 differs from the manifest's: the file is damaged")
    return len(files)


def sqlite_intact(path: Path) -> None:
    """SQLite's own integrity check of the document store, as a one-line DataError."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            problem = db.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{path}: not a readable SQLite database ({exc})") from None
    if problem != "ok":
        raise DataError(f"{path}: SQLite integrity check failed ({problem})")


def verify_index(folder: Path) -> Verified:
    """The full check of an index folder: every file's sha256, SQLite's integrity check, and counts that agree."""
    from common.atomic import read_consistently

    return read_consistently(Path(folder), lambda version: _verify(Path(folder), version))


def _verify(folder: Path, version: Path) -> Verified:
    from index.manifest import Manifest
    from index.search import load_index
    from index.store import STORE_NAME

    manifest = Manifest.read(version)
    files = verify_files(version, manifest.files)
    sqlite_intact(version / STORE_NAME)
    loaded = load_index(version, gpu="off")
    stored, live = loaded.store.count(), loaded.vectors.live_count
    try:
        loaded.store.check_rows()
        has_lexical, lexical_count = loaded.store.has_lexical, loaded.store.lexical_count()
    finally:
        loaded.store.close()
    if not stored == live == manifest.document_count:
        raise DataError(f"{folder}: counts disagree (manifest {manifest.document_count}, SQLite {stored}, FAISS {live})")
    if manifest.lexical and not (has_lexical and lexical_count == stored):
        raise DataError(f"{folder}: the lexical index holds {lexical_count} of {stored} documents")
    floats = loaded.vectors.floats_description().get("rows")
    if manifest.floats and floats != stored:
        raise DataError(f"{folder}: the float vectors for rescoring hold {floats} rows for {stored} documents")
    return Verified(files, stored)
