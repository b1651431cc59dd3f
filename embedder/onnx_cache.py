"""Where a model's ONNX export lives, and whether it is still fresh (no torch here).

The export is cached inside the model folder (`onnx/model.onnx`, `onnx/model_int8.onnx`,
`onnx/source.json`), or, when that folder cannot be written (a read-only folder) or lies
inside a Python installation (the bundled default model in site-packages: never written),
under the user cache dir: `$XDG_CACHE_HOME/simsearch/onnx/<hash>/`.
`source.json` records the sha256 of the transformer's weights and config (whole files; the
digests are remembered in the user cache by size, mtime, ctime and inode, `common.file_digests`,
so an unchanged 90 MB file is not re-hashed on every load, while weights rewritten in place —
even with their mtime restored — are); when they change the cache is stale and is rebuilt. A
rebuild happens under a lock and replaces the cache folder in one rename, so readers never see
half an export.
"""

from __future__ import annotations

import hashlib
import json
import os
import site
import sys
import sysconfig
import tempfile
from pathlib import Path

from common.atomic import atomic_file, atomic_folder, writer_lock
from common.file_digests import folder_digests, user_cache_dir
from errors import UsageError

CACHE_DIR = "onnx"
FILES = {"onnx": "model.onnx", "onnx-int8": "model_int8.onnx"}
SOURCE_RECORD = "source.json"
INSTALL_HINT = "pip install 'simsearch[onnx]'"
# How the exports are made; a cache recording another format (or none: before #30, int8 scales
# spanned the batch) is stale and is exported again.
EXPORT_FORMAT = 2
# Files of the transformer folder whose content the exported graph depends on.
SOURCE_PATTERNS = ("config.json", "model*.safetensors", "pytorch_model*.bin")


def source_files(transformer_dir: Path) -> list[Path]:
    """The transformer's config and weight files, sorted by name."""
    found = {p for pattern in SOURCE_PATTERNS for p in transformer_dir.glob(pattern) if p.is_file()}
    if not any(p.name != "config.json" for p in found):
        raise UsageError(f"{transformer_dir}: no model weights (model.safetensors or pytorch_model.bin) to export to ONNX")
    return sorted(found)


def read_record(cache: Path) -> tuple[dict[str, str], dict[str, int]]:
    """({source file name: sha256}, {export file name: bytes}) a cache folder records; empty when there is no readable record.

    A record of another EXPORT_FORMAT (or of none: written before #30) reads as no record.
    """
    try:
        record = json.loads((cache / SOURCE_RECORD).read_text(encoding="utf-8"))
        if record.get("format") != EXPORT_FORMAT:
            return {}, {}
        return {name: fields["sha256"] for name, fields in record["source"].items()}, dict(record["exports"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}, {}


def current_digests(transformer_dir: Path) -> dict[str, str]:
    """{source file name: sha256 of the whole file} now (re-hashed only when a file's state changed)."""
    return folder_digests(transformer_dir, source_files(transformer_dir))


def is_fresh(cache: Path, transformer_dir: Path) -> bool:
    """True when `cache` holds both exports, whole (their recorded sizes), built from the current source file contents."""
    sources, exports = read_record(cache)
    if not sources or not all((cache / name).is_file() for name in FILES.values()):
        return False
    if any(exports.get(name) != (cache / name).stat().st_size for name in FILES.values()):  # truncated (a killed copy, a full disk)
        return False
    return current_digests(transformer_dir) == sources


def user_cache_root() -> Path:
    """`$XDG_CACHE_HOME/simsearch/onnx`, else `~/.cache/simsearch/onnx`."""
    return user_cache_dir() / "onnx"


def installed(folder: Path) -> bool:
    """Whether `folder` lies inside a Python installation (site-packages, the standard library, an interpreter's prefix): never ours to write."""
    folder = folder.resolve()
    if any(part in ("site-packages", "dist-packages") for part in folder.parts):
        return True
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(), *sysconfig.get_paths().values()}
    return any(folder.is_relative_to(Path(root).resolve()) for root in roots if root and Path(root).resolve() != Path("/"))


def cache_candidates(model_dir: Path) -> list[Path]:
    """Cache folders in order of preference: inside the model folder (unless it is installed with Python), then under the user cache dir."""
    key = hashlib.sha256(str(model_dir.resolve()).encode("utf-8")).hexdigest()[:16]
    return ([] if installed(model_dir) else [model_dir / CACHE_DIR]) + [user_cache_root() / key]


def writable(folder: Path) -> bool:
    """True when a file can be created in `folder` (creating the folder if needed); tries rather than trusts mode bits."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def write_record(cache: Path, digests: dict[str, str], exporter: dict[str, str]) -> None:
    """Write source.json, atomically and readable by every user of a shared model folder: what the exports were built from and with."""
    exports = {name: (cache / name).stat().st_size for name in FILES.values()}
    record = {"format": EXPORT_FORMAT, "source": {name: {"sha256": digest} for name, digest in digests.items()}, "exports": exports, "exporter": exporter}
    with atomic_file(cache / SOURCE_RECORD) as handle:
        os.fchmod(handle.fileno(), 0o644)
        handle.write((json.dumps(record, indent=2) + "\n").encode("utf-8"))


def build(cache: Path, model_dir: Path, transformer_dir: Path, all_layers: bool, classifier: bool) -> None:
    """Export into a fresh temporary folder and swap it in as `cache` (under a lock; skipped if another process just did it)."""
    with writer_lock(cache):  # the same lock atomic_folder takes for the swap (re-entrant), so exports wait for one another
        if is_fresh(cache, transformer_dir):
            return
        digests = current_digests(transformer_dir)
        print(f"exporting {model_dir} to ONNX (once; later runs reuse it) into {cache}", file=sys.stderr, flush=True)
        from embedder.onnx_export import export_model  # torch: imported only when a build is needed

        with atomic_folder(cache, overwrite=True) as work:
            exporter = export_model(transformer_dir, work, all_layers, classifier)
            write_record(work, digests, exporter)


def onnx_cache(model_dir: Path, transformer_dir: Path, all_layers: bool, classifier: bool = False) -> Path:
    """The folder holding fresh exports of the model (a cross-encoder's: with its `classifier` head), exporting first when no fresh cache exists."""
    candidates = cache_candidates(model_dir)
    for cache in candidates:
        if is_fresh(cache, transformer_dir):
            return cache
    for cache in candidates:
        if writable(cache.parent):
            build(cache, model_dir, transformer_dir, all_layers, classifier)
            return cache
    raise UsageError(f"{model_dir}: cannot write an ONNX export into the model folder or {user_cache_root()} (set XDG_CACHE_HOME to a writable folder)")
