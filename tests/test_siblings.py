"""A writer of one index never touches another (#29): siblings named like its temporaries survive every writer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from common.atomic import OWNER_MARK
from conftest import Decoys
from simsearch import api


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_every_local_writer_leaves_siblings_named_like_its_temporaries(tmp_path, tiny_corpus, tiny_model_dir):
    target, more = tmp_path / "docs", tmp_path / "more.jsonl"
    more.write_text('{"id": 100, "text": "a big red train"}\n', encoding="utf-8")
    decoys = Decoys(target, tiny_corpus, tiny_model_dir)
    steps = [
        ("index", "build", tiny_corpus, "-o", target, "--model", tiny_model_dir),
        ("index", "build", tiny_corpus, "-o", target, "--model", tiny_model_dir, "--overwrite"),
        ("index", "add", target, more),
        ("index", "add", target, more, "--upsert"),
        ("index", "remove", target, "100"),
    ]
    for step in steps:
        result = run(*step)
        assert "stale" not in result.stderr, (step, result.stderr)
        decoys.assert_intact()
    assert api.open_index(target, gpu="off").manifest.document_count == 12


def test_a_killed_writers_own_debris_is_still_removed(tmp_path, tiny_corpus, tiny_model_dir):
    target = tmp_path / "docs"
    run("index", "build", tiny_corpus, "-o", target, "--model", tiny_model_dir)
    decoys = Decoys(target, tiny_corpus, tiny_model_dir)
    debris = tmp_path / f".docs.tmp-{'a' * 32}"
    debris.mkdir()
    (debris / OWNER_MARK).write_text(json.dumps({"owner": "docs"}), encoding="utf-8")
    os.symlink(f".docs.v-{'b' * 32}", tmp_path / f".docs.link-{'c' * 32}")
    result = run("index", "remove", target, "2")
    assert f"removed 2 stale temporary item(s) left by an interrupted writer of docs: .docs.link-{'c' * 32}, .docs.tmp-{'a' * 32}" in result.stderr
    decoys.assert_intact()


@pytest.mark.parametrize("kind", ["folder", "index"])
def test_a_folder_in_the_place_of_the_partial_build_is_refused_and_kept(tmp_path, tiny_corpus, tiny_model_dir, kind):
    target, partial = tmp_path / "docs", tmp_path / ".docs.partial"
    if kind == "folder":
        partial.mkdir()
        (partial / "keep.txt").write_text("mine\n", encoding="utf-8")
    else:
        run("index", "build", tiny_corpus, "-o", partial, "--model", tiny_model_dir)
    result = CliRunner().invoke(main, ["index", "build", str(tiny_corpus), "-o", str(target), "--model", str(tiny_model_dir)])
    assert result.exit_code == 2
    assert f"Error: {partial}: is in the way of the build of docs and was not made by simsearch" in result.output
    assert not target.exists()
    if kind == "folder":
        assert (partial / "keep.txt").read_text(encoding="utf-8") == "mine\n"
    else:
        assert api.open_index(partial, gpu="off").manifest.document_count == 12


def test_an_older_simsearchs_version_is_marked_through_its_link_and_pruned_later(tmp_path, tiny_corpus, tiny_model_dir):
    target = tmp_path / "docs"
    run("index", "build", tiny_corpus, "-o", target, "--model", tiny_model_dir)
    first = tmp_path / os.readlink(target)
    (first / OWNER_MARK).unlink()  # as an older simsearch wrote it
    run("index", "remove", target, "1")
    assert (first / OWNER_MARK).is_file()  # the link named it: now known to be ours
    run("index", "remove", target, "2")
    assert not first.exists()
    versions = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".docs.v-"))
    assert len(versions) == 2 and os.readlink(target) in versions


def test_folders_a_killed_writer_made_but_never_marked_are_empty_and_removed(tmp_path, tiny_corpus, tiny_model_dir):
    target = tmp_path / "docs"
    (tmp_path / ".docs.partial").mkdir()  # killed between mkdir and its mark: holds nothing
    run("index", "build", tiny_corpus, "-o", target, "--model", tiny_model_dir)
    unmarked = tmp_path / f".docs.tmp-{'d' * 32}"
    unmarked.mkdir()
    (unmarked / f"{OWNER_MARK}.tmp").write_text("{", encoding="utf-8")  # killed while writing its mark
    result = run("index", "remove", target, "2")
    assert f"removed 1 stale temporary item(s) left by an interrupted writer of docs: {unmarked.name}" in result.stderr
    assert not unmarked.exists() and not (tmp_path / ".docs.partial").exists()
