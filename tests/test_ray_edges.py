"""`--engine ray` at its edges (issue 29): a wrong `--address` fails in seconds with one line; a killed build leaves no Ray behind.

Each case runs `simsearch` in its own process, which starts (or fails to reach) its own Ray; skipped without the `distributed` extra.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "no-port-here"])
def test_a_wrong_address_fails_in_seconds_with_one_line(address, tmp_path, tiny_model_dir, tiny_corpus):
    started = time.monotonic()
    done = run_cli(["index", "build", tiny_corpus, "-o", tmp_path / "idx", "--model", tiny_model_dir, "--engine", "ray", "--address", address], timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"Error: --address {address}: nothing answers at 127.0.0.1:1 (Connection refused within 5 s); start the cluster or fix the address"
        if address != "no-port-here" else "Error: --address no-port-here: expected HOST:PORT, ray://HOST:PORT or auto"
    ]
    assert time.monotonic() - started < 30 and not (tmp_path / "idx").exists()


def test_a_build_killed_with_sigkill_leaves_no_ray_processes(tmp_path, tiny_model_dir):
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"the dog runs in the park {i}\n" for i in range(20_000)), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["index", "build", str(corpus), "-o", str(tmp_path / "idx"), "--model", str(tiny_model_dir), "--engine", "ray", "--workers", "1"]
    build = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, ray_processes, watchdog = time.monotonic() + 120, [], None
        while time.monotonic() < deadline and build.poll() is None:
            children = psutil.Process(build.pid).children(recursive=True)
            ray_processes = [p for p in children if any(name in " ".join(p.cmdline()) for name in ("raylet", "gcs_server"))]
            watchdog = next((p for p in children if "wait_procs" in " ".join(p.cmdline())), None)
            if len(ray_processes) >= 2 and watchdog is not None:
                break
            time.sleep(0.2)
        assert build.poll() is None and len(ray_processes) >= 2 and watchdog is not None, "the build ended before its Ray was up"
        os.kill(build.pid, signal.SIGKILL)
        build.wait(timeout=30)
        _, alive = psutil.wait_procs(ray_processes, timeout=30)
        assert alive == [], [p.cmdline()[:1] for p in alive]
    finally:
        if build.poll() is None:
            build.kill()


def test_only_the_expected_ray_core_worker_line_is_dropped_from_stderr():
    """Ray's C++ error line about actor constructor arguments (every run, harmless) is left out; every other line passes, in order."""
    ray_line = (
        "[2026-12-06 14:44:36,244 E 27166 27166] core_worker.cc:2465: Actor with class name: 'MapWorker(MapBatches(EncodeBlocks))' and ID: "
        "'1642b669e00f71f2f8f1336401000000' has constructor arguments in the object store and max_restarts > 0. If the arguments in the "
        "object store go out of scope or are lost, the actor restart will fail. See https://github.com/ray-project/ray/issues/53727 for more details."
    )
    code = (
        "import os, sys\nfrom distributed.stderr_filter import dropping_expected_ray_line\n"
        "with dropping_expected_ray_line():\n"
        "    os.write(2, b'first\\n')\n"
        f"    os.write(2, {(ray_line + chr(10)).encode()!r})\n"
        "    print('second', file=sys.stderr)\n"
        "    os.write(2, b'[E] core_worker.cc:1: something else failed\\n')\n"
        "print('after', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.splitlines() == ["first", "second", "[E] core_worker.cc:1: something else failed", "after"]
