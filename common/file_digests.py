"""Whole-file sha256 digests remembered across processes, so a 90 MB weight file is hashed once, not on every query.

A digest is reused only while the file's size, mtime, ctime, inode and device are
all unchanged: rewriting the file (even restoring its mtime afterwards, which
changes its ctime) or replacing it (a new inode) makes it hashed again. The record
of one folder lives in the user cache (`$XDG_CACHE_HOME/simsearch/digests/`); when
that cannot be written the files are simply hashed every time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from common.atomic import atomic_file
from common.hashing import sha256_of


def user_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/simsearch`, else `~/.cache/simsearch`: the one place simsearch caches things for a user."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "simsearch"


@dataclass(frozen=True)
class FileState:
    """What changes whenever a file's content can have changed, plus the digest taken in that state."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int
    sha256: str = ""

    @classmethod
    def now(cls, path: Path) -> FileState:
        info = path.stat()
        return cls(info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev)

    def same_file(self, other: FileState) -> bool:
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode, self.device) == (other.size, other.mtime_ns, other.ctime_ns, other.inode, other.device)


def _record_path(folder: Path) -> Path:
    key = hashlib.sha256(str(folder.resolve()).encode("utf-8")).hexdigest()[:16]
    return user_cache_dir() / "digests" / f"{key}.json"


def _read(record: Path) -> dict[str, FileState]:
    try:
        return {name: FileState(**fields) for name, fields in json.loads(record.read_text(encoding="utf-8")).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def folder_digests(folder: Path, files: list[Path]) -> dict[str, str]:
    """{path relative to `folder`: sha256 of the whole file} for `files`, re-hashing only files whose state changed since last time."""
    folder = Path(folder)
    try:
        record: Path | None = _record_path(folder)
    except RuntimeError:  # no home folder to find a cache in: hash every time
        record = None
    known = _read(record) if record is not None else {}
    states = {}
    for path in files:
        name, now = path.relative_to(folder).as_posix(), FileState.now(path)
        old = known.get(name)
        states[name] = old if old is not None and old.same_file(now) else FileState(**{**asdict(now), "sha256": sha256_of(path)})
    kept = {name: state for name, state in known.items() if name not in states and (folder / name).is_file()}  # other callers' files
    if record is not None and any(known.get(name) != state for name, state in states.items()):
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(record) as handle:
                handle.write(json.dumps({name: asdict(state) for name, state in {**kept, **states}.items()}).encode("utf-8"))
        except OSError:
            pass  # a read-only or full cache: correct, only slower next time
    return {name: state.sha256 for name, state in states.items()}
