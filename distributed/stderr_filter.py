"""Drop one known, harmless line that Ray's C++ core worker writes straight to file descriptor 2 during a Ray Data run.

Ray Data starts its actor pool with `max_restarts=-1` (a killed actor is restarted and its
block retried) and passes each actor its work through the object store; Ray 2.60's core
worker then logs, at error level and on every run, "Actor with class name: ... has constructor
arguments in the object store and max_restarts > 0 ..." (ray-project/ray#53727). It is
expected here: the driver holds those arguments until the run ends. Being C++ output, no
Python logging setting reaches it, so the driver's fd 2 goes through a pipe for the run and
every other line is passed on unchanged.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

EXPECTED_RAY_LINE = re.compile(rb"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store and max_restarts > 0")
JOIN_TIMEOUT_S = 5.0


def _pump(source_fd: int, target_fd: int, drop: re.Pattern[bytes]) -> None:
    """Copy lines from `source_fd` to `target_fd` until end of file, leaving out those `drop` matches."""
    with os.fdopen(source_fd, "rb", buffering=0) as source:
        for line in source:
            if not drop.search(line):
                os.write(target_fd, line)


@contextmanager
def dropping_expected_ray_line(drop: re.Pattern[bytes] = EXPECTED_RAY_LINE) -> Iterator[None]:
    """While the block runs, lines written to fd 2 by this process (Python or C++) that match `drop` are left out."""
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, original, drop), name="stderr-filter", daemon=True)
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's write end: the pump reads to its end and stops
        pump.join(JOIN_TIMEOUT_S)
        if not pump.is_alive():
            os.close(original)
