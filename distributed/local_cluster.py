"""The local Ray cluster simsearch starts dies with it: a watchdog process stops it when simsearch is killed.

`ray.init()` without an address starts a GCS, a raylet, a dashboard agent and workers.
When simsearch ends normally Ray shuts them down; after `kill -9` they kept running
(seen with Ray 2.60). The watchdog is a small child process in its own session that
holds the read end of a pipe whose write end only simsearch holds: when simsearch
dies for any reason the pipe reports end-of-file, and the watchdog terminates the
processes simsearch started (each checked by its creation time, so a reused pid is
never touched), then kills what is left after a grace period.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil

GRACE_SECONDS = 5.0

# Runs in the watchdog: read the process list, wait for end-of-file, stop whatever of it still runs.
_WATCHDOG = """
import json, sys
import psutil
processes = []
for line in sys.stdin:
    processes = json.loads(line)
alive = []
for pid, created in processes:
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - created) < 0.01:
            process.terminate()
            alive.append(process)
    except psutil.Error:
        pass
_, left = psutil.wait_procs(alive, timeout=float(sys.argv[1]))
for process in left:
    try:
        process.kill()
    except psutil.Error:
        pass
"""


def started_processes() -> set[tuple[int, float]]:
    """(pid, creation time) of every process this one has started, directly or not (the local Ray's GCS, raylet, agents)."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            found.add((child.pid, child.create_time()))
        except psutil.Error:  # it ended meanwhile
            pass
    return found


def stop_with_this_process(before: set[tuple[int, float]]) -> None:
    """Start the watchdog for the processes started since `before` (taken just before `ray.init()` started a local cluster)."""
    reader, writer = os.pipe()  # not inherited by later children (PEP 446): only this process holds the write end
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(GRACE_SECONDS)], stdin=reader, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(reader)
    processes = sorted(p for p in started_processes() - before if p[0] != watchdog.pid)
    os.write(writer, (json.dumps(processes) + "\n").encode())
    _held_open.append(writer)  # closed by the kernel when this process ends, however it ends


_held_open: list[int] = []  # the pipe's write end, open for the life of this process
