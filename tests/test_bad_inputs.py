"""The bad-input catalogue (issue #12, docs/reliability.md): each case runs the real CLI and must end in one line.

Every case asserts the exit code, a one-line `Error: ...` naming the file or
field, no traceback, and that the data it must not touch (an existing index,
an existing output file) is byte-identical afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from common.corpus import CorpusSpec
from common.hashing import sha256_of
from conftest import crash_on_call, run_cli
from embedder import SentenceEncoder
from index import BuildConfig
from index.partial import STREAM_VECTORS, partial_path
from simsearch import api



@dataclass
class Case:
    """A command line, what it must answer, and the paths it must leave byte-identical."""

    args: list
    code: int
    fragments: tuple[str, ...]
    guarded: list[Path] = field(default_factory=list)
    disk_limit: int | None = None  # run in a subprocess whose files may not grow past this many bytes (a full disk)
    fresh_process: bool = False  # run in a subprocess, so warnings reach stderr as they do for a user


def snapshot(paths: list[Path]) -> dict[str, bytes]:
    """Bytes of every file under `paths` (index links followed)."""
    found = {}
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in Path(os.path.realpath(path)).rglob("*") if p.is_file())
        found.update({str(p): p.read_bytes() for p in files})
    return found


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def edit_manifest(folder: Path, **changes) -> None:
    path = Path(os.path.realpath(folder)) / "manifest.json"
    manifest = json.loads(path.read_text())
    for key, value in changes.items():
        target = manifest
        *parents, last = key.split(".")
        for parent in parents:
            target = target[parent]
        target[last] = value
    path.write_text(json.dumps(manifest))


def corpus_lines(n: int) -> str:
    return "".join(f"the dog runs in the park {i}\n" for i in range(n))


@pytest.fixture(scope="module")
def base_index(tmp_path_factory, tiny_model_dir) -> Path:
    folder = tmp_path_factory.mktemp("base")
    write(folder / "c.txt", corpus_lines(40))
    api.build(CorpusSpec(folder / "c.txt"), folder / "idx", BuildConfig(), model=str(tiny_model_dir))
    return folder / "idx"


@dataclass
class Env:
    tmp: Path
    model: Path
    base: Path
    read_only: Callable[[Path], Path]  # the conftest fixture: makes a folder nobody can write into

    def index(self, name: str = "idx") -> Path:
        """A fresh copy of the shared tiny index (a plain folder, as an older simsearch wrote it)."""
        shutil.copytree(self.base, self.tmp / name)
        return self.tmp / name

    def sts(self, body: str) -> Path:
        return write(self.tmp / "sts.tsv", "sentence1\tsentence2\tscore\n" + body)


def partial_build(env: Env, monkeypatch) -> Path:
    """A build (default chunk size, as the CLI runs it) interrupted after its first chunk: `.idx.partial` holds a checkpoint."""
    corpus = write(env.tmp / "c.txt", corpus_lines(BuildConfig().chunk_size + 50))
    crash_on_call(monkeypatch, SentenceEncoder, "encode", 3)  # 1: the tuning/training sample, 2: chunk 1, 3: chunk 2
    with pytest.raises(RuntimeError):
        api.build(CorpusSpec(corpus), env.tmp / "idx", BuildConfig(), model=str(env.model))
    monkeypatch.undo()
    assert (partial_path(env.tmp / "idx") / STREAM_VECTORS).stat().st_size > 0
    return corpus


def resume_short_stream(env: Env, monkeypatch) -> Case:
    corpus = partial_build(env, monkeypatch)
    with open(partial_path(env.tmp / "idx") / STREAM_VECTORS, "r+b") as handle:
        handle.truncate(100)
    return Case(["index", "build", corpus, "-o", env.tmp / "idx", "--resume", "--model", env.model], 1, ("damaged checkpoint", "stream.f32 holds 100 bytes"))


def resume_flipped_bytes(env: Env, monkeypatch) -> Case:
    corpus = partial_build(env, monkeypatch)
    stream = partial_path(env.tmp / "idx") / STREAM_VECTORS
    data = bytearray(stream.read_bytes())
    data[8:12] = b"\0\0\0\0"
    stream.write_bytes(bytes(data))
    return Case(["index", "build", corpus, "-o", env.tmp / "idx", "--resume", "--model", env.model], 1, ("damaged checkpoint", "sha256"))


def changed_model(env: Env, monkeypatch) -> Case:
    """A reduced model re-reduced to the same dimension (another JL seed) in place: the index's vectors no longer match it."""
    model = env.tmp / "reduced"
    assert CliRunner().invoke(main, ["reduce", "jl", str(env.model), "--dim", "16", "-o", str(model), "--seed", "0"]).exit_code == 0
    idx = env.tmp / "idx"
    api.build(CorpusSpec(write(env.tmp / "c.txt", corpus_lines(20))), idx, BuildConfig(), model=str(model))
    assert CliRunner().invoke(main, ["reduce", "jl", str(env.model), "--dim", "16", "-o", str(model), "--seed", "1", "--overwrite"]).exit_code == 0
    return Case(["query", idx, "a dog"], 2, ("changed since the index was built", "fingerprint"), [idx])


def manifest_case(**changes) -> Callable[[Env, object], Case]:
    def make(env: Env, monkeypatch) -> Case:
        idx = env.index()
        edit_manifest(idx, **changes)
        return Case(["query", idx, "a dog"], 1, ("manifest.json", f"field '{next(iter(changes))}"), [idx])

    return make


def garbage_sqlite(env: Env, monkeypatch) -> Case:
    idx = env.index()
    store = idx / "docs.sqlite"
    store.write_bytes(b"not a database at all".ljust(store.stat().st_size, b"!"))  # same size: only SQLite can tell
    return Case(["query", idx, "a dog"], 1, ("docs.sqlite", "not a simsearch document store"), [idx])


def tableless_sqlite(env: Env, monkeypatch) -> Case:
    idx = env.index()
    (idx / "docs.sqlite").unlink()
    db = sqlite3.connect(idx / "docs.sqlite")
    db.execute("CREATE TABLE other (x)")
    db.commit()
    db.close()
    edit_manifest(idx, files={})  # as an index from before checksums were recorded
    return Case(["query", idx, "a dog"], 1, ("docs.sqlite", "no such table: docs"), [idx])


def object_tombstones(env: Env, monkeypatch) -> Case:
    idx = env.index()
    np.save(idx / "tombstones.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    edit_manifest(idx, files={})
    return Case(["query", idx, "a dog"], 1, ("tombstones.npy", "not a plain integer array"), [idx])


def damaged_vectors(env: Env, monkeypatch) -> Case:
    idx = env.index()
    with open(idx / "vectors.faiss", "r+b") as handle:
        handle.truncate(50)
    return Case(["query", idx, "a dog"], 1, ("vectors.faiss", "50 bytes but the manifest records"), [idx])


def pickled_model(env: Env, monkeypatch) -> Case:
    """A model folder whose weights are a pickle holding more than tensors (pytorch_model.bin): refused, never unpickled."""
    import torch
    from safetensors.torch import load_file

    model = env.tmp / "pickled"
    shutil.copytree(env.model, model)
    weights = model / "model.safetensors"
    torch.save({**load_file(weights), "payload": Path("/etc/passwd")}, model / "pytorch_model.bin")
    weights.unlink()
    return Case(["index", "build", write(env.tmp / "c.txt", "a dog\n"), "-o", env.tmp / "out", "--model", model], 2, ("cannot load model", "refused"))


def pickled_model_protocol_4(env: Env, monkeypatch) -> Case:
    """Weights pickled with protocol 4: torch warns about the protocol before refusing; only our line may show."""
    import torch
    from safetensors.torch import load_file

    model = env.tmp / "pickled4"
    shutil.copytree(env.model, model)
    weights = model / "model.safetensors"
    torch.save({**load_file(weights), "payload": Path("/etc/passwd")}, model / "pytorch_model.bin", pickle_protocol=4)
    weights.unlink()
    case = Case(["index", "build", write(env.tmp / "c.txt", "a dog\n"), "-o", env.tmp / "out", "--model", model], 2, ("cannot load model", "refused"))
    return replace(case, fresh_process=True)


def shard_outside(env: Env, monkeypatch) -> Case:
    idx = env.index()
    edit_manifest(idx, shards=[{"path": "../../../../etc/passwd", "documents": 40, "bytes": 1}], format_version=3)
    return Case(["query", idx, "a dog"], 1, ("manifest.json", "field 'shards[0].path' is '../../../../etc/passwd', expected a folder name inside the index folder"), [idx])


def metadata_not_json(command: str) -> Callable[[Env, object], Case]:
    """Metadata that is not a JSON object, with the manifest's checksum of docs.sqlite updated to match (so only reading the rows finds it)."""

    def make(env: Env, monkeypatch) -> Case:
        idx = env.index()
        store = idx / "docs.sqlite"
        with sqlite3.connect(store) as db:
            db.execute("UPDATE docs SET metadata = '{not json' WHERE id = 4")
        db.close()
        files = json.loads((Path(os.path.realpath(idx)) / "manifest.json").read_text())["files"]
        edit_manifest(idx, files={**files, "docs.sqlite": {"bytes": store.stat().st_size, "sha256": sha256_of(store)}})
        if command == "where":
            return Case(["query", idx, "a dog", "--where", "lang=en"], 1, ("docs.sqlite: the metadata of some document is not JSON", "index verify"), [idx])
        args = ["query", idx, "the dog runs in the park 3", "-k", "40"] if command == "query" else ["index", "verify", idx]
        return Case(args, 1, ("docs.sqlite: document 4: metadata is not JSON", "index verify"), [idx])

    return make


def symlink_loop(env: Env, monkeypatch) -> Case:
    (env.tmp / "loop").symlink_to(env.tmp / "loop")
    return Case(["index", "build", write(env.tmp / "c.txt", "a dog\n"), "-o", env.tmp / "loop", "--model", env.model], 2, ("loop", "symbolic link loop"))


def read_only_folder(env: Env, monkeypatch) -> Case:
    """An output folder the user may not write."""
    (env.tmp / "ro").mkdir()
    folder = env.read_only(env.tmp / "ro")
    return Case(["index", "build", write(env.tmp / "c.txt", "a dog\n"), "-o", folder / "idx", "--model", env.model], 2, ("ro", "is not writable"))


def disk_full(command: str) -> Callable[[Env, object], Case]:
    def make(env: Env, monkeypatch) -> Case:
        corpus = write(env.tmp / "c.txt", corpus_lines(400))
        idx = env.index()
        args = {
            "build": ["index", "build", corpus, "-o", env.tmp / "new", "--model", env.model],
            "add": ["index", "add", idx, corpus],
            "encode": ["encode", corpus, "-o", env.tmp / "out.npy", "--model", env.model],
            "report": ["report", write(env.tmp / "r.json", json.dumps({"spearman": 0.5, "pearson": 0.5, "n": 3, "data": "x" * 60000})), "-o", env.tmp / "r.md"],
        }[command]
        named = {"build": "new", "add": "docs.sqlite", "encode": "out.npy", "report": "r.md"}[command]
        # 40 KB: an empty docs.sqlite with its lexical FTS5 tables (~25 KB) fits, the work does not.
        return Case(args, 1, (named, "File too large" if command != "add" else "SQLite could not write it"), [idx, corpus], disk_limit=40_000)

    return make


def disk_full_add_copy(env: Env, monkeypatch) -> Case:
    """An index whose vectors.faiss (400 x 128 bytes) is larger than the file limit: the update's copy of it fails."""
    write(env.tmp / "big.txt", corpus_lines(400))
    api.build(CorpusSpec(env.tmp / "big.txt"), env.tmp / "big", BuildConfig(), model=str(env.model))
    args = ["index", "add", env.tmp / "big", write(env.tmp / "c.txt", "a dog\n")]
    return Case(args, 1, ("big: could not copy ", "to update the index (File too large); the index is unchanged"), [env.tmp / "big"], disk_limit=20_000)


def disk_full_build_sqlite(env: Env, monkeypatch) -> Case:
    """Long texts: SQLite hits the limit before the vector stream does (SQLite's own error, not an OSError)."""
    corpus = write(env.tmp / "c.txt", "".join(f"{'the dog runs in the park ' * 12}{i}\n" for i in range(150)))
    args = ["index", "build", corpus, "-o", env.tmp / "new", "--model", env.model]
    return Case(args, 1, ("docs.sqlite: SQLite could not write it", "removed the partial build .new.partial to free the space"), [corpus], disk_limit=40_000)


def _case(make: Callable[[Env], Case]) -> Callable[[Env, object], Case]:
    return lambda env, monkeypatch: make(env)


CASES: dict[str, Callable[[Env, object], Case]] = {
    # Data lost or corrupted with exit 0 (issue items 1-8; the races are in test_concurrency.py).
    "negative-id": _case(lambda e: Case(["index", "build", write(e.tmp / "c.jsonl", '{"id": 1, "text": "a dog"}\n{"id": -5, "text": "a cat"}\n'), "-o", e.tmp / "o", "--model", e.model], 1, ("c.jsonl:2", "outside 0"))),
    "resume-short-stream": resume_short_stream,
    "resume-flipped-bytes": resume_flipped_bytes,
    "encode-existing-output": _case(lambda e: Case(["encode", write(e.tmp / "c.txt", "a dog\n"), "-o", write(e.tmp / "out.npy", "keep"), "--model", e.model], 2, ("out.npy", "already exists"), [e.tmp / "out.npy"])),
    "model-changed-same-dim": changed_model,
    "sts-nan-score": _case(lambda e: Case(["eval", "sts", "--data", e.sts("a dog\ta cat\t1\nthe man\ta man\tnan\n"), "--model", e.model], 1, ("sts.tsv:3", "not a finite number"))),
    "sts-inf-score": _case(lambda e: Case(["eval", "sts", "--data", e.sts("a dog\ta cat\tinf\nthe man\ta man\t2\n"), "--model", e.model], 1, ("sts.tsv:2", "not a finite number"))),
    "sts-constant-gold": _case(lambda e: Case(["eval", "sts", "--data", e.sts("a dog\ta cat\t3\nthe man\ta man\t3\n"), "--model", e.model, "--json"], 1, ("sts.tsv", "every gold score is the same"))),
    "sts-one-pair": _case(lambda e: Case(["eval", "sts", "--data", e.sts("a dog\ta cat\t3\n"), "--model", e.model], 1, ("sts.tsv", "at least 2 pairs"))),
    "manifest-unknown-index-type": manifest_case(index_type="annoy"),
    "manifest-nprobe-not-a-number": manifest_case(**{"search_params": {"nprobe": "abc"}}),
    "manifest-bad-quality": manifest_case(quality={"recall_at_10": "high"}),
    "manifest-negative-dim": manifest_case(embedding_dim=-3),
    "qrels-infinite-relevance": _case(lambda e: Case(["eval", "retrieval", e.index(), "--queries", write(e.tmp / "q.tsv", "q1\ta dog\n"), "--qrels", write(e.tmp / "qrels.tsv", "q1\t1\tinf\n")], 1, ("qrels.tsv:1", "not a finite number"))),
    # Tracebacks that must be one line.
    "garbage-docs-sqlite": garbage_sqlite,
    "table-less-docs-sqlite": tableless_sqlite,
    "object-array-tombstones": object_tombstones,
    "truncated-vectors": damaged_vectors,
    "pickled-weights-model": pickled_model,
    "deeply-nested-jsonl": _case(lambda e: Case(["index", "build", write(e.tmp / "c.jsonl", '{"text": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n"), "-o", e.tmp / "o", "--model", e.model], 1, ("c.jsonl:1", "nested too deeply"))),
    "remove-id-above-int64": _case(lambda e: Case(["index", "remove", e.index(), str(2**64)], 2, ("18446744073709551616", "outside 0"), [e.tmp / "idx"])),
    "output-name-too-long": _case(lambda e: Case(["index", "build", write(e.tmp / "c.txt", "a dog\n"), "-o", e.tmp / ("x" * 240), "--model", e.model], 2, ("output name too long",))),
    "output-symlink-loop": symlink_loop,
    "output-folder-read-only": read_only_folder,
    "output-under-a-file": _case(lambda e: Case(["index", "build", write(e.tmp / "c.txt", "a dog\n"), "-o", e.tmp / "c.txt" / "idx", "--model", e.model], 2, ("c.txt", "is not a folder"), [e.tmp / "c.txt"])),
    "encode-output-folder-missing": _case(lambda e: Case(["encode", write(e.tmp / "c.txt", "a dog\n"), "-o", e.tmp / "missing" / "x.npy", "--model", e.model], 2, ("missing", "does not exist"))),
    "add-txt-clash-message": _case(lambda e: Case(["index", "add", e.index(), write(e.tmp / "c.jsonl", '{"id": 3, "text": "a dog"}\n')], 2, ("c.jsonl", "1 id(s) already in", "--upsert"), [e.tmp / "idx"])),
    "pickled-weights-protocol-4": pickled_model_protocol_4,
    "manifest-shard-outside-folder": shard_outside,
    "manifest-file-outside-folder": manifest_case(files={"../../../etc/passwd": {"bytes": 1, "sha256": "x"}}),
    "metadata-not-json-query": metadata_not_json("query"),
    "metadata-not-json-verify": metadata_not_json("verify"),
    "metadata-not-json-where": metadata_not_json("where"),
    "disk-full-add-copy": disk_full_add_copy,
    "disk-full-build-sqlite": disk_full_build_sqlite,
    "model-path-missing": _case(lambda e: Case(["encode", write(e.tmp / "c.txt", "a dog\n"), "-o", e.tmp / "o.npy", "--model", "./no-such-model"], 2, ("./no-such-model: no such model folder",))),
    "model-deep-path-missing": _case(lambda e: Case(["encode", write(e.tmp / "c.txt", "a dog\n"), "-o", e.tmp / "o.npy", "--model", "models/mine/v2"], 2, ("models/mine/v2: no such model folder",))),
    "query-where-unknown-field": _case(lambda e: Case(["query", e.index(), "a dog", "--where", "colour=red"], 2, ("--where: unknown field(s) colour for index 'idx' (its metadata fields: none)",), [e.tmp / "idx"])),
    "disk-full-build": disk_full("build"),
    "disk-full-add": disk_full("add"),
    "disk-full-encode": disk_full("encode"),
    "disk-full-report": disk_full("report"),
    # Cases the suite already covered, kept in the catalogue.
    "corpus-not-utf8": _case(lambda e: Case(["index", "build", (e.tmp / "c.txt").write_bytes(b"ok\n\xff\n") and e.tmp / "c.txt", "-o", e.tmp / "o", "--model", e.model], 1, ("c.txt:2", "UTF-8"))),
    "corpus-empty": _case(lambda e: Case(["index", "build", write(e.tmp / "c.txt", "\n\n"), "-o", e.tmp / "o", "--model", e.model], 1, ("c.txt", "no documents"))),
    "corpus-duplicate-id": _case(lambda e: Case(["index", "build", write(e.tmp / "c.jsonl", '{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n'), "-o", e.tmp / "o", "--model", e.model], 1, ("c.jsonl", "id 1 appears twice"))),
    "corpus-missing-column": _case(lambda e: Case(["index", "build", write(e.tmp / "c.tsv", "a\tb\nx\ty\n"), "-o", e.tmp / "o", "--model", e.model], 2, ("c.tsv:1", "--text-column"))),
    "build-existing-without-overwrite": _case(lambda e: Case(["index", "build", write(e.tmp / "c.txt", "a dog\n"), "-o", e.index(), "--model", e.model], 2, ("already exists",), [e.tmp / "idx"])),
    "remove-absent-id": _case(lambda e: Case(["index", "remove", e.index(), "99999"], 1, ("not in the index", "99999"), [e.tmp / "idx"])),
    "query-not-an-index": _case(lambda e: Case(["query", e.tmp, "a dog"], 1, ("manifest.json",))),
    "verify-damaged-file": _case(lambda e: Case(["index", "verify", flip_last_byte(e.index(), "docs.sqlite")], 1, ("docs.sqlite", "sha256 differs"))),
}


def flip_last_byte(folder: Path, name: str) -> Path:
    path = folder / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    return folder


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gives_one_line_and_touches_nothing(name, tmp_path, tiny_model_dir, base_index, monkeypatch, read_only):
    case = CASES[name](Env(tmp_path, tiny_model_dir, base_index, read_only), monkeypatch)
    args = [str(a) for a in case.args]
    before = snapshot(case.guarded)
    if case.disk_limit is not None or case.fresh_process:
        done = run_cli(args, file_limit=case.disk_limit)
        code, stderr = done.returncode, done.stderr
    else:
        result = CliRunner().invoke(main, args)
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        code, stderr = result.exit_code, result.stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if not line.startswith(("removed ", "waiting "))]
    assert code == case.code, stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    for fragment in case.fragments:
        assert fragment in lines[0]
    assert snapshot(case.guarded) == before
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or p.name.endswith(".partial") and case.disk_limit]
    assert leftovers == [], leftovers
