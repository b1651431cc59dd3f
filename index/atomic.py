"""Write a folder all at once: build in a temporary sibling, then rename into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from errors import UsageError


def check_target(target: Path, overwrite: bool) -> None:
    """Fail early, before any work, if `target` exists and may not be replaced."""
    if target.exists() and not overwrite:
        raise UsageError(f"{target}: already exists (pass --overwrite to replace it)")
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target}: exists and is not a folder")


@contextmanager
def atomic_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `target` in one rename.

    On any exception the temporary folder is removed and `target` is untouched,
    so a crash never leaves a half-written folder at `target`.
    """
    check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield work
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, retired / "index")
            os.replace(work, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
