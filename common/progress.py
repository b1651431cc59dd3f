"""One progress-bar policy: bars go to stderr, and only on a terminal unless the caller says otherwise."""

from __future__ import annotations

import sys

from tqdm import tqdm

# Inputs at least this long get a bar by default; shorter work finishes before a bar helps.
PROGRESS_THRESHOLD = 1000


def wants_progress(show: bool | None, total: int | None = None) -> bool:
    """Resolve a `show_progress` argument: True/False as given; None means on a terminal, for long work."""
    if show is not None:
        return show
    return sys.stderr.isatty() and (total is None or total >= PROGRESS_THRESHOLD)


def progress_bar(total: int | None, desc: str, unit: str, show: bool | None = None, initial: int = 0) -> tqdm:
    """A tqdm bar on stderr that follows the policy above."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not wants_progress(show, total), file=sys.stderr)
