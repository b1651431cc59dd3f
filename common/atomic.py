"""Safe writes: build a folder or file in a temporary sibling, then rename it into place."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from errors import UsageError


def check_target(target: Path, overwrite: bool) -> None:
    """Fail early, before any work, if `target` exists and may not be replaced."""
    if target.exists() and not overwrite:
        raise UsageError(f"{target}: already exists (pass --overwrite to replace it)")
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target}: exists and is not a folder")


def swap_into_place(work: Path, target: Path) -> None:
    """Move the finished folder `work` to `target`, replacing any old `target` by renames only."""
    if target.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, retired / "index")
        os.replace(work, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(work, target)


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
        swap_into_place(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


@contextmanager
def atomic_update(folder: Path) -> Iterator[Path]:
    """Yield a copy of `folder` to modify; on success it replaces `folder` in one rename.

    On any exception `folder` is left exactly as it was. A lock file beside the
    folder makes concurrent updates wait instead of losing one another's changes.
    """
    lock_path = folder.parent / f".{folder.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        try:
            shutil.copytree(folder, work, dirs_exist_ok=True)
            yield work
            swap_into_place(work, folder)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise


@contextmanager
def atomic_file(target: Path) -> Iterator[BinaryIO]:
    """Yield a binary handle on a temporary sibling of `target`; on success it is synced and renamed over `target`.

    On any exception the temporary file is removed and `target` is untouched.
    """
    target = Path(target)
    if not target.parent.is_dir():
        raise UsageError(f"{target}: folder {target.parent} does not exist")
    handle = tempfile.NamedTemporaryFile(prefix=f".{target.name}.tmp-", dir=target.parent, delete=False)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
