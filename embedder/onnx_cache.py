"""Where a model's ONNX export lives, and whether it is still fresh (no torch here).

The export is cached inside the model folder (`onnx/model.onnx`, `onnx/model_int8.onnx`,
`onnx/source.json`), or, when that folder cannot be written (a read-only folder, an
installed package), under the user cache dir: `$XDG_CACHE_HOME/simsearch/onnx/<hash>/`.
`source.json` records the sha256 of the transformer's weights and config; when they
change the cache is stale and is rebuilt. A rebuild happens under a lock and replaces
the cache folder in one rename, so readers never see half an export.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from common.atomic import atomic_file, atomic_folder, writer_lock
from common.hashing import sha256_of
from errors import UsageError

CACHE_DIR = "onnx"
FILES = {"onnx": "model.onnx", "onnx-int8": "model_int8.onnx"}
SOURCE_RECORD = "source.json"
INSTALL_HINT = "pip install 'simsearch[onnx]'"
# Files of the transformer folder whose content the exported graph depends on.
SOURCE_PATTERNS = ("config.json", "model*.safetensors", "pytorch_model*.bin")


@dataclass(frozen=True)
class FileStamp:
    """A source file's content hash, plus size and mtime to skip re-hashing an unchanged file."""

    sha256: str
    size: int
    mtime_ns: int


def source_files(transformer_dir: Path) -> list[Path]:
    """The transformer's config and weight files, sorted by name."""
    found = {p for pattern in SOURCE_PATTERNS for p in transformer_dir.glob(pattern) if p.is_file()}
    if not any(p.name != "config.json" for p in found):
        raise UsageError(f"{transformer_dir}: no model weights (model.safetensors or pytorch_model.bin) to export to ONNX")
    return sorted(found)


def stamp(path: Path, known: FileStamp | None = None) -> FileStamp:
    """The file's stamp; the hash is taken from `known` when size and mtime are unchanged (a cold start skips hashing)."""
    info = path.stat()
    if known is not None and (known.size, known.mtime_ns) == (info.st_size, info.st_mtime_ns):
        return known
    return FileStamp(sha256_of(path), info.st_size, info.st_mtime_ns)


def read_record(cache: Path) -> dict[str, FileStamp]:
    """The source stamps a cache folder was built from; empty when there is no readable record."""
    try:
        record = json.loads((cache / SOURCE_RECORD).read_text(encoding="utf-8"))
        return {name: FileStamp(**fields) for name, fields in record["source"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def current_stamps(transformer_dir: Path, known: dict[str, FileStamp]) -> dict[str, FileStamp]:
    """Stamps of the transformer's source files now, reusing `known` hashes of unchanged files."""
    return {p.name: stamp(p, known.get(p.name)) for p in source_files(transformer_dir)}


def is_fresh(cache: Path, transformer_dir: Path) -> bool:
    """True when `cache` holds both exports built from the current source file contents.

    When the contents match but sizes or mtimes do not (a copied model folder), the
    record takes the new stamps, so the next load skips hashing the weights again.
    """
    recorded = read_record(cache)
    if not recorded or not all((cache / name).is_file() for name in FILES.values()):
        return False
    now = current_stamps(transformer_dir, recorded)
    if {n: s.sha256 for n, s in now.items()} != {n: s.sha256 for n, s in recorded.items()}:
        return False
    if now != recorded:
        restamp(cache, now)
    return True


def user_cache_root() -> Path:
    """`$XDG_CACHE_HOME/simsearch/onnx`, else `~/.cache/simsearch/onnx`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "simsearch" / "onnx"


def cache_candidates(model_dir: Path) -> list[Path]:
    """Cache folders in order of preference: inside the model folder, then under the user cache dir."""
    key = hashlib.sha256(str(model_dir.resolve()).encode("utf-8")).hexdigest()[:16]
    return [model_dir / CACHE_DIR, user_cache_root() / key]


def writable(folder: Path) -> bool:
    """True when a file can be created in `folder` (creating the folder if needed); tries rather than trusts mode bits."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def write_record(cache: Path, stamps: dict[str, FileStamp], exporter: dict[str, str]) -> None:
    """Write source.json, atomically and readable by every user of a shared model folder: what the exports were built from and with."""
    record = {"source": {name: asdict(s) for name, s in stamps.items()}, "exporter": exporter}
    with atomic_file(cache / SOURCE_RECORD) as handle:
        os.fchmod(handle.fileno(), 0o644)
        handle.write((json.dumps(record, indent=2) + "\n").encode("utf-8"))


def restamp(cache: Path, stamps: dict[str, FileStamp]) -> None:
    """Replace source.json's stamps (same hashes, new size/mtime), atomically; a read-only cache keeps its old ones."""
    try:
        write_record(cache, stamps, json.loads((cache / SOURCE_RECORD).read_text(encoding="utf-8")).get("exporter", {}))
    except OSError:
        pass  # a cache someone else owns: still fresh, just hashed again next time


def build(cache: Path, model_dir: Path, transformer_dir: Path, all_layers: bool) -> None:
    """Export into a fresh temporary folder and swap it in as `cache` (under a lock; skipped if another process just did it)."""
    with writer_lock(cache):  # the same lock atomic_folder takes for the swap (re-entrant), so exports wait for one another
        if is_fresh(cache, transformer_dir):
            return
        stamps = current_stamps(transformer_dir, read_record(cache))  # hashes only files whose size or mtime changed
        from embedder.onnx_export import export_model  # torch: imported only when a build is needed

        with atomic_folder(cache, overwrite=True) as work:
            exporter = export_model(transformer_dir, work, all_layers)
            write_record(work, stamps, exporter)


def onnx_cache(model_dir: Path, transformer_dir: Path, all_layers: bool) -> Path:
    """The folder holding fresh exports of the model, exporting first when no fresh cache exists."""
    candidates = cache_candidates(model_dir)
    for cache in candidates:
        if is_fresh(cache, transformer_dir):
            return cache
    for cache in candidates:
        if writable(cache.parent):
            build(cache, model_dir, transformer_dir, all_layers)
            return cache
    raise UsageError(f"{model_dir}: cannot write an ONNX export into the model folder or {user_cache_root()} (set XDG_CACHE_HOME to a writable folder)")
