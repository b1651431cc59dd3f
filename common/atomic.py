"""Safe writes: one writer lock per folder, folders built beside their target and swapped in atomically, durable renames.

A folder (a model, a data set) is built beside its target and exchanged with it
in one step (`swap_into_place`). An index folder `DIR` is a symbolic link to a versioned sibling `.DIR.v-XXXX`; a
writer builds the next version beside it and replaces the link with one
`rename(2)`, so a reader sees the old or the new version, never a missing or
half-written one. A folder from an older simsearch (a real directory) is turned
into a link on its first write (atomically where the kernel has `renameat2`).
Every writer of `DIR` holds the lock `.DIR.lock` (`writer_lock`) from before it
reads anything its write depends on until after the swap.

Every folder simsearch makes beside `DIR` (a temporary copy, a retired folder, a
version, a build's `.DIR.partial`) holds an owner mark (`OWNER_MARK`, naming `DIR`),
and a writer removes only siblings it can prove are its own: the exact name
pattern *and* the mark (a link: the exact pattern and a version as its target).
A folder it did not create — `DIR.old-2024`'s versions, say — is never deleted,
whatever its name.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import glob
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, TypeVar

from errors import SimsearchError, UsageError

T = TypeVar("T")
LOCK_POLL_SECONDS = 0.05
READ_RETRIES = 5
# Longest name simsearch adds to a target's name for its siblings (".NAME.link-" + 32 hex digits, ".NAME.partial").
_SIBLING_OVERHEAD = 42
OWNER_MARK = ".simsearch-owner"  # inside every folder simsearch makes beside a target: {"owner": the target's name}
SIBLING_KINDS = ("tmp", "old", "link", "v")  # temporary copy, retired folder, link about to be swapped in, version
_held = threading.local()  # lock files this thread holds (the lock is re-entrant within one thread)


class LockTimeout(SimsearchError):
    """Another writer held a folder's lock for longer than --lock-timeout."""


def lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


def writer_folder(path: Path) -> Path:
    """The folder a writer of `path` works on: a user's own symlink is followed, simsearch's version link is kept."""
    path = Path(path).absolute()
    if not path.is_symlink() or _is_version_link(path):
        return path
    try:
        return path.resolve(strict=True)
    except (RuntimeError, OSError) as exc:  # a loop raises RuntimeError before Python 3.13, OSError(ELOOP) after
        if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
            raise UsageError(f"{path}: is a symbolic link loop") from None
        raise UsageError(f"{path}: is a symbolic link to {os.readlink(path)}, which does not exist") from None


@contextmanager
def writer_lock(folder: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the one writer lock of `folder` (build, add, remove, server and Ray writers all take it).

    Says once on stderr that it waits when another writer holds it; after `timeout`
    seconds (None: wait for ever) it gives up with a one-line `LockTimeout`.
    Re-entrant within a thread; other threads and processes wait.
    """
    path = lock_path(Path(folder).absolute())
    held: set[Path] = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        _acquire(handle, folder, timeout)
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)


def _acquire(handle, folder: Path, timeout: float | None) -> None:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        print(f"waiting for the writer lock on {folder} (another simsearch is writing it)…", file=sys.stderr, flush=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockTimeout(f"{folder}: another writer still holds {lock_path(Path(folder))} after {timeout:g} s (--lock-timeout)") from None
            time.sleep(LOCK_POLL_SECONDS)


def check_target(target: Path, overwrite: bool) -> None:
    """Fail early, before any work, if `target` may not be (re)placed: exists without overwrite, not a folder, unwritable place, name too long."""
    target = writer_folder(target)
    if target.exists() and not overwrite:
        raise UsageError(f"{target}: already exists (pass --overwrite to replace it)")
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target}: exists and is not a folder")
    check_output_place(target)


def check_file_target(target: Path, overwrite: bool) -> None:
    """Fail early, before any work, if the output file (or shard folder) `target` exists without overwrite or could never be written."""
    if target.exists() and not overwrite:
        raise UsageError(f"{target}: already exists (pass --overwrite to replace it)")
    check_output_place(target)


def check_output_place(target: Path) -> None:
    """Fail in a second, not after hours of work, when `target` could never be written: name too long, parent not a folder."""
    target = Path(target).absolute()
    limit = _name_max(target.parent) - _SIBLING_OVERHEAD
    if len(os.fsencode(target.name)) > limit:
        raise UsageError(f"{target.name[:40]}…: output name too long ({len(os.fsencode(target.name))} bytes; at most {limit})")
    existing = next(p for p in (target.parent, *target.parent.parents) if p.exists() or p.is_symlink())
    if not existing.is_dir():
        raise UsageError(f"{target}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{target}: folder {existing} is not writable")


def _name_max(folder: Path) -> int:
    existing = next((p for p in (folder, *folder.parents) if p.is_dir()), Path("/"))
    try:
        return os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under `folder` (the folder itself last) to disk."""
    for root, _, names in os.walk(folder, topdown=False):
        for name in names:
            if not os.path.islink(os.path.join(root, name)):
                with open(os.path.join(root, name), "rb") as handle:
                    os.fsync(handle.fileno())
        fsync_dir(Path(root))


def fsync_dir(folder: Path) -> None:
    """Make renames inside `folder` durable (what SQLite and FAISS users do before trusting a rename)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sibling_name(target: Path, kind: str) -> str:
    """A new name `.NAME.KIND-<32 hex>` beside `target` (KIND one of SIBLING_KINDS)."""
    return f".{target.name}.{kind}-{uuid.uuid4().hex}"


def _is_sibling_name(name: str, target: Path, kind: str) -> bool:
    return re.fullmatch(rf"\.{re.escape(target.name)}\.{kind}-[0-9a-f]{{32}}", name) is not None


def mark_own(folder: Path, owner: Path) -> None:
    """Mark `folder` as made by simsearch for the target `owner`, so a later writer of `owner` may remove it (atomically: whole or absent)."""
    partial = folder / f"{OWNER_MARK}.tmp"
    partial.write_text(json.dumps({"owner": owner.name}) + "\n", encoding="utf-8")
    os.replace(partial, folder / OWNER_MARK)


def remove_own(folder: Path) -> None:
    """Remove a folder simsearch made, its mark last: a removal cut short leaves it marked (removed later), never unmarked and stranded."""
    with suppress(OSError):
        for entry in folder.iterdir():
            if entry.name != OWNER_MARK:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        (folder / OWNER_MARK).unlink(missing_ok=True)
        folder.rmdir()


def own_sibling(target: Path, kind: str) -> Path:
    """Make a new, marked folder `.NAME.KIND-<32 hex>` beside `target` (the umask's mode, as any folder the user makes)."""
    folder = target.parent / sibling_name(target, kind)
    folder.mkdir()
    mark_own(folder, target)
    return folder


def is_own(path: Path, target: Path) -> bool:
    """Whether `path` is a real folder that simsearch marked as made for `target`, or an empty one (the name is checked by the caller)."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        return json.loads((path / OWNER_MARK).read_text(encoding="utf-8")) == {"owner": target.name}
    except FileNotFoundError:  # made and killed before its mark was written, or emptied by a removal cut short: nothing in it to lose
        return all(entry.name == f"{OWNER_MARK}.tmp" for entry in path.iterdir())
    except (OSError, ValueError):
        return False


def own_siblings(target: Path, kind: str) -> list[Path]:
    """The siblings of `target` that simsearch provably made as `kind`: exact name pattern, and the mark (a link: a version as target)."""
    candidates = (p for p in target.parent.glob(f".{glob.escape(target.name)}.{kind}-*") if _is_sibling_name(p.name, target, kind))
    if kind == "link":
        return [p for p in candidates if p.is_symlink() and _is_sibling_name(os.readlink(p), target, "v")]
    return [p for p in candidates if is_own(p, target)]


def _is_version_link(path: Path) -> bool:
    return path.is_symlink() and _is_sibling_name(os.readlink(path), path, "v")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two names in one step with Linux renameat2(RENAME_EXCHANGE); False where unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def swap_into_place(work: Path, target: Path) -> None:
    """Replace the folder `target` by the finished folder `work`: synced, then exchanged in one step where the kernel can."""
    fsync_tree(work)
    if target.is_dir() and not target.is_symlink() and _exchange(work, target):
        shutil.rmtree(work, ignore_errors=True)  # `work` now holds the old folder
    elif target.exists():
        retired = own_sibling(target, "old")
        os.replace(target, retired / "old")
        os.replace(work, target)
        remove_own(retired)
    else:
        os.replace(work, target)
    fsync_dir(target.parent)


def publish_version(work: Path, target: Path) -> None:
    """Publish the finished index folder `work` as `target`: durable on disk, then one atomic swap of the link `target`.

    Call under `writer_lock(target)`. The version just replaced is kept until the
    next swap, so a reader that resolved the link a moment ago can finish loading;
    older versions (and any a killed writer left unpublished) are removed.
    """
    target = Path(target).absolute()
    mark_own(work, target)
    fsync_tree(work)
    version = target.parent / sibling_name(target, "v")
    os.replace(work, version)
    link = target.parent / sibling_name(target, "link")
    os.symlink(version.name, link)
    previous = os.readlink(target) if _is_version_link(target) else None
    if target.is_dir() and not target.is_symlink():  # an older simsearch's plain folder becomes a version itself
        previous = sibling_name(target, "v")
        if _exchange(link, target):
            os.replace(link, target.parent / previous)
        else:
            os.replace(target, target.parent / previous)
            os.replace(link, target)
    else:
        os.replace(link, target)
    fsync_dir(target.parent)
    if previous is not None and (target.parent / previous).is_dir() and not (target.parent / previous / OWNER_MARK).exists():
        mark_own(target.parent / previous, target)  # an older simsearch's version, named by our own link: pruned at the next swap
    for stale in own_siblings(target, "v"):
        if stale.name not in (version.name, previous):
            remove_own(stale)


def clean_stale(target: Path) -> None:
    """Remove what killed writers left beside `target` (temporary copies, links, unpublished versions); call under its lock.

    Says on stderr what it removed. `.NAME.partial` is kept: it is a build's resumable progress.
    """
    target = Path(target).absolute()
    removed = []
    for kind in ("tmp", "link", "old"):
        for stale in own_siblings(target, kind):
            stale.unlink() if kind == "link" else remove_own(stale)
            removed.append(stale.name)
    if removed:
        print(f"removed {len(removed)} stale temporary item(s) left by an interrupted writer of {target.name}: {', '.join(sorted(removed))}", file=sys.stderr)


def read_consistently(path: Path, load: Callable[[Path], T]) -> T:
    """`load(version folder)` with the link of `path` resolved once, retried if a writer swapped and pruned it meanwhile."""
    path = Path(path)
    for attempt in range(READ_RETRIES):
        resolved = Path(os.path.realpath(path))
        try:
            return load(resolved)
        except (SimsearchError, OSError) as exc:  # retried only when a writer swapped the link meanwhile
            if attempt == READ_RETRIES - 1 or Path(os.path.realpath(path)) == resolved:
                if isinstance(exc, SimsearchError) and resolved != path.absolute():  # name the folder the user gave, not its version
                    raise type(exc)(str(exc).replace(str(resolved), str(path))) from None
                raise
    raise AssertionError("unreachable")


@contextmanager
def atomic_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `target` in one swap (under its writer lock).

    On any exception the temporary folder is removed and `target` is untouched,
    so a crash never leaves a half-written folder at `target`.
    """
    check_target(target, overwrite)
    target = writer_folder(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = own_sibling(target, "tmp")  # not mkdtemp (mode 700): the result gets the mode any folder the user makes gets
    try:
        yield work
        with writer_lock(target):
            check_target(target, overwrite)
            (work / OWNER_MARK).unlink()  # the finished folder is the user's
            swap_into_place(work, target)
    except BaseException:
        remove_own(work) if (work / OWNER_MARK).exists() else shutil.rmtree(work, ignore_errors=True)
        raise


@contextmanager
def atomic_update(folder: Path) -> Iterator[Path]:
    """Yield a copy of the index folder `folder` to modify; on success it is published as the new version in one swap.

    Holds `folder`'s writer lock throughout; callers that read what the change
    depends on (ids, manifest) must take `writer_lock` before reading it.
    On any exception `folder` is left exactly as it was.
    """
    folder = writer_folder(folder)
    with writer_lock(folder):
        clean_stale(folder)
        work = own_sibling(folder, "tmp")
        try:
            _copy_index(folder, work)
            yield work
            publish_version(work, folder)
        except SimsearchError as exc:  # name the index, not its temporary copy
            remove_own(work)
            raise type(exc)(str(exc).replace(str(work), str(folder))) from None
        except BaseException:
            remove_own(work)
            raise


def _copy_index(folder: Path, work: Path) -> None:
    """Copy the index into the update's temporary folder; a failed copy (a full disk) is one line, and the index is untouched."""
    try:
        shutil.copytree(folder, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns(OWNER_MARK))
    except shutil.Error as exc:  # copytree gathers each file's failure: (source, target, reason)
        source, _, reason = exc.args[0][0]
        strerror = re.match(r"\[Errno \d+\] ([^:]+)", str(reason))
        raise SimsearchError(
            f"{folder}: could not copy {Path(source).name} to update the index ({strerror.group(1) if strerror else reason}); the index is unchanged"
        ) from None


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """Give an operating-system error raised while writing `path` its file name (a failed write() carries none)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def current_umask() -> int:
    """This process's umask, read without changing it (os.umask would, for a moment, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        previous = os.umask(0o022)
        os.umask(previous)
        return previous


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
        with naming(target), handle:
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())  # the mode any file the user makes gets, not mkstemp's 0600
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
        fsync_dir(target.parent)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
