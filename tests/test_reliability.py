"""Reliability behaviour that ends in success: fresh ids on add, checksums and verify, fingerprints, link migration, debris clean-up."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from click.testing import CliRunner

from cli import main
from common.corpus import CorpusSpec
from embedder.model_files import model_fingerprint
from index import BuildConfig
from common.hashing import sha256_of
from conftest import crash_on_call
from simsearch import api


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def build(corpus: Path, out: Path, model: Path) -> Path:
    api.build(CorpusSpec(corpus), out, BuildConfig(), model=str(model))
    return out


def test_adding_a_text_file_gives_fresh_ids_after_the_largest(tmp_path, tiny_corpus, tiny_model_dir):
    idx = build(tiny_corpus, tmp_path / "idx", tiny_model_dir)  # line numbers 1..13 (line 4 blank)
    more = tmp_path / "more.txt"
    more.write_text("a big red train\nthe cat sleeps in the city\n", encoding="utf-8")
    for first in (14, 16):  # the same file twice: new ids each time, nothing clashes
        result = run("index", "add", idx, more)
        assert result.exit_code == 0, result.output
        assert f"added 2 (new ids {first}–{first + 1}), replaced 0" in result.stderr
    searcher = api.open_index(idx)
    assert searcher.store.get([14, 15, 16, 17]) == {14: ("a big red train", {}), 15: ("the cat sleeps in the city", {}), 16: ("a big red train", {}), 17: ("the cat sleeps in the city", {})}
    assert searcher.search(["a big red train"], k=1)[0][0].id in (14, 16)


def test_jsonl_rows_without_id_get_fresh_ids_after_the_files_own(tmp_path, tiny_corpus, tiny_model_dir):
    idx = build(tiny_corpus, tmp_path / "idx", tiny_model_dir)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a dog"}\n{"id": 500, "text": "a cat"}\n{"text": "a man"}\n', encoding="utf-8")
    assert "new ids 501–502" in run("index", "add", idx, rows).stderr
    assert {i: t for i, (t, _) in api.open_index(idx).store.get([500, 501, 502]).items()} == {500: "a cat", 501: "a dog", 502: "a man"}


def test_a_line_number_equal_to_a_files_own_id_is_no_clash_for_add_but_is_for_build(tmp_path, tiny_corpus, tiny_model_dir):
    idx = build(tiny_corpus, tmp_path / "idx", tiny_model_dir)  # ids 1..13
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": 20, "text": "a cat"}\n' + "\n" * 18 + '{"text": "a dog"}\n', encoding="utf-8")  # "a dog" is on line 20
    result = run("index", "add", idx, rows)  # line 20 has no id of its own: it gets a fresh one, so it cannot clash with id 20
    assert result.exit_code == 0, result.output
    assert "added 2 (new ids 21–21)" in result.stderr
    assert {i: t for i, (t, _) in api.open_index(idx).store.get([20, 21]).items()} == {20: "a cat", 21: "a dog"}
    built = run("index", "build", rows, "-o", tmp_path / "built", "--model", tiny_model_dir)  # build keeps line numbers: 20 twice
    assert built.exit_code != 0 and "rows.jsonl: id 20 appears twice" in built.output


def test_manifest_records_checksums_and_the_model_fingerprint_and_verify_checks_them(tmp_path, tiny_corpus, tiny_model_dir):
    idx = build(tiny_corpus, tmp_path / "idx", tiny_model_dir)
    manifest = json.loads((idx / "manifest.json").read_text())
    assert set(manifest["files"]) == {"vectors.faiss", "docs.sqlite"}
    assert all(record["sha256"] == sha256_of(idx / name) and record["bytes"] == (idx / name).stat().st_size for name, record in manifest["files"].items())
    assert manifest["model_fingerprint"] == model_fingerprint(str(tiny_model_dir))
    result = run("index", "verify", idx)
    assert result.exit_code == 0 and result.stderr.startswith(f"ok: {idx}: 2 files match their checksums, 12 documents")


def test_fingerprint_ignores_copies_and_mtimes_but_not_weights(tmp_path, tiny_model_dir):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy", copy_function=shutil.copy)  # new mtimes
    os.utime(copy / "config.json", (0, 0))
    assert model_fingerprint(str(copy)) == model_fingerprint(str(tiny_model_dir))
    (copy / "README.md").write_text("notes", encoding="utf-8")
    assert model_fingerprint(str(copy)) == model_fingerprint(str(tiny_model_dir))
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(weights))
    assert model_fingerprint(str(copy)) != model_fingerprint(str(tiny_model_dir))


def rewrite_in_place(path: Path, offset: int, size: int) -> None:
    """Overwrite `size` bytes at `offset` of `path` with other bytes, keeping its size and restoring its mtime (a silent change)."""
    info = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        old = handle.read(size)
        handle.seek(offset)
        handle.write(bytes(b ^ 0x5A for b in old))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert path.stat().st_size == info.st_size and path.stat().st_mtime_ns == info.st_mtime_ns


def test_64_kib_changed_in_the_middle_of_large_weights_is_refused(tmp_path, tiny_corpus):
    from embedder import DEFAULT_MODEL_NAME
    from embedder.model_files import resolve_model

    model = Path(shutil.copytree(resolve_model(DEFAULT_MODEL_NAME), tmp_path / "model", ignore=shutil.ignore_patterns("onnx")))
    idx = build(tiny_corpus, tmp_path / "idx", model)
    assert run("query", idx, "a dog").exit_code == 0
    weights = model / "model.safetensors"
    assert weights.stat().st_size > 50 * 2**20
    rewrite_in_place(weights, weights.stat().st_size // 2, 64 * 1024)
    result = run("query", idx, "a dog")
    assert result.exit_code == 2
    assert f"Error: {idx}: the model {model} changed since the index was built (fingerprint v2:" in result.output


def test_fingerprint_digests_are_remembered_until_a_file_changes_even_with_its_mtime_restored(tmp_path, tiny_model_dir, monkeypatch):
    import common.file_digests

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    first = model_fingerprint(str(model))
    hashed = crash_on_call(monkeypatch, common.file_digests, "sha256_of", 0)  # counts calls, never raises (call 0 never comes)
    assert model_fingerprint(str(model)) == first and hashed["n"] == 0  # nothing re-hashed
    rewrite_in_place(model / "model.safetensors", (model / "model.safetensors").stat().st_size // 2, 64)
    assert model_fingerprint(str(model)) != first and hashed["n"] == 1  # only the changed file


def test_an_older_simsearchs_fingerprint_is_still_checked(tmp_path, tiny_corpus, tiny_model_dir):
    from embedder.model_files import legacy_model_fingerprint

    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    idx = build(tiny_corpus, tmp_path / "idx", model)
    manifest = json.loads((idx / "manifest.json").read_text())
    manifest["model_fingerprint"] = legacy_model_fingerprint(str(model))  # as an older simsearch recorded it
    (idx / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert ":" not in manifest["model_fingerprint"] and run("query", idx, "a dog").exit_code == 0
    rewrite_in_place(model / "model.safetensors", (model / "model.safetensors").stat().st_size - 1000, 16)
    result = run("query", idx, "a dog")
    assert result.exit_code == 2 and f"Error: {model}: the model changed since an index was built with it" in result.output


def test_an_older_plain_folder_becomes_a_link_on_its_first_write(tmp_path, tiny_corpus, tiny_model_dir):
    built = build(tiny_corpus, tmp_path / "built", tiny_model_dir)
    plain = Path(shutil.copytree(built, tmp_path / "idx"))  # a real folder, as simsearch wrote it before versioned links
    assert not plain.is_symlink()
    assert run("index", "remove", plain, "1").exit_code == 0
    assert plain.is_symlink() and os.readlink(plain).startswith(".idx.v-")
    assert api.open_index(plain).manifest.document_count == 11
    assert run("index", "verify", plain).exit_code == 0


def test_qrels_naming_documents_absent_from_the_index_warn_with_the_count(tmp_path, tiny_corpus, tiny_model_dir):
    idx = build(tiny_corpus, tmp_path / "idx", tiny_model_dir)
    (tmp_path / "q.tsv").write_text("q1\ta man playing guitar\n", encoding="utf-8")
    (tmp_path / "qrels.tsv").write_text("q1\t1\t1\nq1\t999\t1\nq1\tdoc-x\t1\n", encoding="utf-8")
    result = run("eval", "retrieval", idx, "--queries", tmp_path / "q.tsv", "--qrels", tmp_path / "qrels.tsv", "--json")
    assert result.exit_code == 0, result.output
    assert f"warning: 2 judged document id(s) of {tmp_path / 'qrels.tsv'} are not in {idx} (they count as misses)" in result.stderr


def test_a_written_model_folder_gets_the_mode_of_any_folder_the_user_makes(tmp_path, tiny_model_dir):
    """Not mkdtemp's private 700: other users of a shared models folder must be able to load it."""
    result = run("reduce", "jl", tiny_model_dir, "--dim", "16", "-o", tmp_path / "reduced")
    assert result.exit_code == 0, result.output
    (tmp_path / "plain").mkdir()
    assert (tmp_path / "reduced").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777 != 0o700


def test_files_we_write_get_the_umasks_mode_like_the_index_files(tmp_path, tiny_corpus, tiny_model_dir):
    previous = os.umask(0o022)
    try:
        run("encode", tiny_corpus, "-o", tmp_path / "v.npy", "--model", tiny_model_dir)
        (tmp_path / "r.json").write_text(json.dumps({"spearman": 0.5, "pearson": 0.5, "n": 3}), encoding="utf-8")
        run("report", tmp_path / "r.json", "-o", tmp_path / "r.md")
    finally:
        os.umask(previous)
    assert (tmp_path / "v.npy").stat().st_mode & 0o777 == 0o644  # mkstemp's 0600 before
    assert (tmp_path / "r.md").stat().st_mode & 0o777 == 0o644
