"""Backends per command (an index's own by default, --backend to override), `bench encode`, and what a cold query imports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("user_cache")  # every test gets its own ONNX export cache dir

from cli import main  # noqa: E402
from common.corpus import CorpusSpec  # noqa: E402
from conftest import run_python  # noqa: E402
from index.manifest import Manifest  # noqa: E402
from server.registry import Registry  # noqa: E402
from simsearch import api  # noqa: E402

QUERIES = ["a dog sleeps on the sofa", "stocks fell", "a man playing guitar", "the fast red car", "rain today in the city"]
HEAVY = ("torch", "sentence_transformers", "transformers", "scipy")


def cli_hits(folder: Path, *args: str) -> list[list[tuple[int, float]]]:
    """(id, score) of the hits of each of QUERIES, through the CLI."""
    queries = folder.parent / "queries.txt"
    queries.write_text("\n".join(QUERIES) + "\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["query", str(folder), "--queries", str(queries), "-k", "3", "--json", *args])
    assert result.exit_code == 0, result.output
    return [[(h["id"], h["score"]) for h in json.loads(line)["hits"]] for line in result.stdout.splitlines()]


def test_a_torch_index_queried_with_onnx_int8_gives_nearly_the_same_hits(tmp_path, tiny_corpus, tiny_model_dir):
    api.build(tiny_corpus, tmp_path / "idx", model=str(tiny_model_dir))
    torch_hits, int8_hits = cli_hits(tmp_path / "idx"), cli_hits(tmp_path / "idx", "--backend", "onnx-int8")
    assert [h[0][0] for h in int8_hits] == [h[0][0] for h in torch_hits]  # the same best hit for every query
    differences = [abs(a[1] - b[1]) for t, i in zip(torch_hits, int8_hits) for a, b in zip(t, i) if a[0] == b[0]]
    assert len(differences) >= 12 and max(differences) < 0.05 and max(differences) > 0  # nearly, not exactly: int8 was used


def test_the_manifest_backend_is_the_default_for_query_and_add(tmp_path, tiny_corpus, tiny_model_dir):
    folder = tmp_path / "idx"
    api.build(tiny_corpus, folder, model=str(tiny_model_dir), backend="onnx-int8")
    assert Manifest.read(folder).backend == "onnx-int8"
    assert cli_hits(folder) == cli_hits(folder, "--backend", "onnx-int8") != cli_hits(folder, "--backend", "torch")
    more = tmp_path / "more.jsonl"
    more.write_text('{"id": 100, "text": "a blue car"}\n{"id": 101, "text": "the woman sleeps"}\n', encoding="utf-8")
    api.add(folder, CorpusSpec(more, id_column="id"))
    result = CliRunner().invoke(main, ["index", "add", str(folder), str(more), "--id-column", "id", "--upsert", "--backend", "torch"])
    assert result.exit_code == 0, result.output
    updates = Manifest.read(folder).source["updates"]
    assert [u["backend"] for u in updates] == ["onnx-int8", "torch"] and Manifest.read(folder).backend == "onnx-int8"


def test_eval_ann_takes_a_backend(tmp_path, tiny_corpus, tiny_model_dir):
    api.build(tiny_corpus, tmp_path / "idx", model=str(tiny_model_dir))
    result = CliRunner().invoke(main, ["eval", "ann", str(tmp_path / "idx"), "--queries", "5", "-k", "3", "--json", "--backend", "onnx-int8"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ann_recall"] == 1.0  # flat index: exact, whichever backend encodes both sides
    bad = CliRunner().invoke(main, ["eval", "ann", str(tmp_path / "idx"), "--backend", "tensorflow"])
    assert bad.exit_code == 2 and "tensorflow" in bad.stderr


def test_serve_shares_one_encoder_per_model_and_backend(tmp_path, tiny_corpus, tiny_model_dir):
    folders = [tmp_path / "a", tmp_path / "b"]
    api.build(tiny_corpus, folders[0], model=str(tiny_model_dir))
    api.build(tiny_corpus, folders[1], model=str(tiny_model_dir), backend="onnx-int8")
    own = Registry.load(folders)
    assert sorted(backend for _, backend in own.encoders) == ["onnx-int8", "torch"]
    assert own.entries["a"].index.encoder.describe()["backend"] == "torch"
    shared = Registry.load(folders, backend="onnx-int8")
    assert [backend for _, backend in shared.encoders] == ["onnx-int8"]
    assert shared.entries["a"].index.encoder is shared.entries["b"].index.encoder


def run_cli(*args: str) -> list[str]:
    """`python -c` running the click group in a fresh interpreter, then printing which heavy modules it imported: its lines."""
    code = (
        "import sys\nfrom cli import main\n"
        f"main({list(args)!r}, standalone_mode=False)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    return run_python(code).splitlines()


def test_an_onnx_int8_query_imports_no_torch_transformers_or_scipy(tmp_path, tiny_corpus, tiny_model_dir):
    api.build(tiny_corpus, tmp_path / "torch-idx", model=str(tiny_model_dir))  # a torch index, queried with int8
    api.build(tiny_corpus, tmp_path / "int8-idx", model=str(tiny_model_dir), backend="onnx-int8")  # the export is cached now
    for args in (("query", str(tmp_path / "torch-idx"), "a dog", "--backend", "onnx-int8"), ("query", str(tmp_path / "int8-idx"), "a dog")):
        out = run_cli(*args)
        assert out[0] == "query: a dog" and "[" in out[1] and out[-1] == "[]"


def test_bench_encode_prints_a_row_per_backend(tmp_path, tiny_corpus, tiny_model_dir):
    args = ["bench", "encode", "--model", str(tiny_model_dir), "--backend", "torch", "--backend", "onnx-int8", "--data", str(tiny_corpus), "--repeats", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = [line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows == ["backend", "torch", "onnx-int8"]
    torch_row = next(line for line in result.stdout.splitlines() if line.startswith("| torch "))
    assert "| 1.00 |" in torch_row and "| 1.0000 | 1.0000 |" in torch_row  # the reference, and its own cosine
    missing = CliRunner().invoke(main, ["bench", "encode", "--backend", "torch"])
    assert missing.exit_code == 2 and "--data" in missing.stderr
