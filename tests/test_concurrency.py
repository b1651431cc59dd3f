"""Concurrency and crash faults with real processes: writer races, kill -9 at random points, readers during swaps."""

from __future__ import annotations

import fcntl
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from common.atomic import lock_path
from common.corpus import CorpusSpec
from errors import DataError
from index.build import BuildConfig, build_index
from index.integrity import verify_index
from index.search import load_index
from index.store import DocStore
from index.update import add_documents, remove_documents
from reliability_workers import HashEncoder, extra_corpus

ROOT = Path(__file__).resolve().parents[1]
WORKERS = Path(__file__).with_name("reliability_workers.py")
KILL_SEEDS = 20
SWAPS = 50


def cli(*args, log: Path | None = None) -> subprocess.Popen:
    """The CLI in a subprocess; stderr goes to `log` when given (so a test can see it wait), else to a pipe."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stderr = open(log, "w") if log else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-m", "cli", *map(str, args)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


def finish(process: subprocess.Popen, log: Path | None = None) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=300)
    return process.returncode, log.read_text() if log else stderr


@contextmanager
def held_until_all_wait(folder: Path, logs: list[Path], seconds: float = 120) -> Iterator[None]:
    """Hold `folder`'s writer lock while the body starts writers, until each has said (in its log) that it waits; then let them race."""
    with open(lock_path(folder.absolute()), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
        deadline = time.monotonic() + seconds
        while not all(log.exists() and "waiting for the writer lock" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, [log.read_text() for log in logs if log.exists()]
            time.sleep(0.05)


def texts(folder: Path) -> dict[int, str]:
    searcher = load_index(folder, gpu="off")
    found = {i: text for i, (text, _) in searcher.store.get(range(0, 200_000)).items()}
    searcher.store.close()
    return found


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_lines(tmp_path / "corpus.txt", [f"the dog runs in the park {i}" for i in range(40)])


def test_rebuild_while_an_add_runs_keeps_the_rebuild(tmp_path, tiny_model_dir):
    """Race 1: `add` and `build --overwrite` released at once: whichever goes first, the rebuild is never lost or mixed with the old index."""
    old = write_lines(tmp_path / "old.txt", [f"a cat is eating food {i}" for i in range(20)])
    new = write_lines(tmp_path / "new.txt", [f"the blue train is slow {i}" for i in range(30)])
    more = write_lines(tmp_path / "more.txt", [f"stocks fell today {i}" for i in range(10)])
    idx = tmp_path / "idx"
    assert finish(cli("index", "build", old, "-o", idx, "--model", tiny_model_dir))[0] == 0
    logs = [tmp_path / "add.log", tmp_path / "build.log"]
    with held_until_all_wait(idx, logs):
        adding = cli("index", "add", idx, more, log=logs[0])
        rebuilding = cli("index", "build", new, "-o", idx, "--overwrite", "--model", tiny_model_dir, log=logs[1])
    (add_code, add_err), (build_code, build_err) = finish(adding, logs[0]), finish(rebuilding, logs[1])
    assert (add_code, build_code) == (0, 0), add_err + build_err
    found = sorted(texts(idx).values())
    rebuilt = sorted(new.read_text().splitlines())
    assert found in (rebuilt, sorted(rebuilt + more.read_text().splitlines()))  # add before the rebuild, or after it
    assert verify_index(idx).documents == len(found)


@pytest.mark.parametrize("upsert", [True, False])
def test_two_adds_of_the_same_new_id(tmp_path, tiny_model_dir, corpus, upsert):
    """Race 2: two adds of one new id released at once: the id is stored once and counts agree (plain add: one clean refusal)."""
    idx = tmp_path / "idx"
    assert finish(cli("index", "build", corpus, "-o", idx, "--model", tiny_model_dir))[0] == 0
    files = [write_lines(tmp_path / f"{name}.jsonl", [json.dumps({"id": 7777, "text": text})]) for name, text in (("a", "a red car is fast"), ("b", "a small cat"))]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    flag = ["--upsert"] if upsert else []
    with held_until_all_wait(idx, logs):
        adds = [cli("index", "add", idx, file, *flag, log=log) for file, log in zip(files, logs)]
    results = [finish(add, log) for add, log in zip(adds, logs)]
    codes = sorted(code for code, _ in results)
    assert all("Traceback" not in err for _, err in results)
    if upsert:
        assert codes == [0, 0] and texts(idx)[7777] in ("a red car is fast", "a small cat")
    else:
        refused = next(err for code, err in results if code)
        assert codes == [0, 2] and "1 id(s) already in" in refused.strip().splitlines()[-1]
    assert verify_index(idx).documents == 41
    searcher = load_index(idx, gpu="off")
    _, found = searcher.search_ids(np.full((1, searcher.manifest.embedding_dim), 1.0), 100)  # every stored vector, once each
    assert len(found[0]) == len(set(found[0].tolist())) == 41


def test_two_builds_of_the_same_new_folder(tmp_path, tiny_model_dir, corpus):
    """The second build waits for the first, then refuses cleanly: the folder exists now."""
    idx = tmp_path / "idx"
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    with held_until_all_wait(idx, logs):
        builds = [cli("index", "build", corpus, "-o", idx, "--model", tiny_model_dir, log=log) for log in logs]
    results = sorted(finish(build, log) for build, log in zip(builds, logs))
    assert [code for code, _ in results] == [0, 2]
    assert results[1][1].strip().splitlines()[-1] == f"Error: {idx}: already exists (pass --overwrite to replace it)"
    assert verify_index(idx).documents == 40


def test_lock_timeout_gives_up_with_one_line(tmp_path, corpus):
    idx = tmp_path / "idx"
    build_index(CorpusSpec(corpus), idx, HashEncoder(), BuildConfig(gpu="off"))
    with open(lock_path(idx), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        code, stderr = finish(cli("index", "remove", idx, "3", "--lock-timeout", "0.5"))
    assert code == 1 and stderr.strip().splitlines()[-1].startswith(f"Error: {idx}: another writer still holds")
    assert verify_index(idx).documents == 40


def test_kill_9_at_random_points_never_loses_or_damages_the_index(tmp_path, corpus):
    """A writer cycling add/remove/rebuild is killed at a random moment, 20 times: the index always verifies, base documents intact."""
    idx = tmp_path / "idx"
    encoder = HashEncoder()
    build_index(CorpusSpec(corpus), idx, encoder, BuildConfig(gpu="off", chunk_size=16))
    base = texts(idx)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for seed in range(KILL_SEEDS):
        writer = subprocess.Popen([sys.executable, str(WORKERS), "write", str(idx), str(corpus), str(seed)], env=env, stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(random.Random(seed).uniform(0.0, 1.0))
        writer.kill()
        writer.wait()
        found = texts(idx)
        _, extra_ids = extra_corpus(tmp_path, seed)
        assert {i: found[i] for i in base} == base, f"seed {seed}"
        assert set(found) - set(base) <= set(extra_ids) | {i for s in range(seed) for i in extra_corpus(tmp_path, s)[1]}, f"seed {seed}"
        assert verify_index(idx).documents == len(found), f"seed {seed}"
    add_documents(idx, CorpusSpec(write_lines(tmp_path / "one.txt", ["a big green dog"])), encoder)  # cleans what the kills left
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".idx.") and p.name not in (".idx.lock", ".idx.partial"))
    assert len(leftovers) <= 2 and all(name.startswith(".idx.v-") for name in leftovers), leftovers


def test_a_store_pruned_before_it_is_opened_is_an_error_a_reader_retries(tmp_path):
    """A version pruned between a reader's checks and its open must raise what read_consistently retries, not sqlite3's own error."""
    with pytest.raises(DataError, match="missing.sqlite: cannot open the document store"):
        DocStore.open(tmp_path / "missing.sqlite")


def test_readers_never_see_a_missing_or_half_swapped_index(tmp_path, corpus):
    """A reader process loading and searching in a loop during 50 swaps (add/remove) never fails."""
    idx = tmp_path / "idx"
    encoder = HashEncoder()
    build_index(CorpusSpec(corpus), idx, encoder, BuildConfig(gpu="off"))
    stop = tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    reader = subprocess.Popen([sys.executable, str(WORKERS), "read", str(idx), "120", str(stop)], env=env, stdout=subprocess.PIPE, text=True)
    extra, ids = extra_corpus(tmp_path, 0)
    assert reader.stdout.readline().strip() == "ready"
    try:
        for swap in range(SWAPS):
            if swap % 2 == 0:
                add_documents(idx, CorpusSpec(extra), encoder)
            else:
                remove_documents(idx, ids)
    finally:
        stop.touch()
    report = json.loads(reader.communicate(timeout=120)[0])
    assert report["errors"] == 0, report["first_error"]
    assert report["loads"] >= SWAPS // 5, report  # the reader really ran during the swaps
