"""File content hashes: the one sha256 helper behind manifests, ONNX caches and training records."""

from __future__ import annotations

import hashlib
from pathlib import Path

READ_BLOCK = 1 << 20


def sha256_of(path: Path | str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()
