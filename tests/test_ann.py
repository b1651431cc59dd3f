"""`eval ann`: an index's own search against exact search over the same documents."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from cli import main
from conftest import TINY_WORDS


def corpus_of_word_triples(path, n: int = 600) -> None:
    rng = np.random.default_rng(0)
    lines = {" ".join(rng.choice(TINY_WORDS, size=3)) for _ in range(n * 3)}
    path.write_text("\n".join(sorted(lines)[:n]) + "\n", encoding="utf-8")


def ann(folder, *extra):
    result = CliRunner().invoke(main, ["eval", "ann", str(folder), "--queries", "60", "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_flat_index_has_perfect_recall_and_a_coarse_ivf_index_does_not(tmp_path, tiny_model_dir):
    corpus_of_word_triples(tmp_path / "c.txt")
    runner = CliRunner()
    for kind in ("flat", "ivf"):
        built = runner.invoke(main, ["index", "build", str(tmp_path / "c.txt"), "-o", str(tmp_path / kind), "--model", str(tiny_model_dir), "--type", kind])
        assert built.exit_code == 0, built.output
    flat = ann(tmp_path / "flat")
    assert flat["index_type"] == "flat" and flat["queries"] == 60 and flat["k"] == 10
    assert flat["ann_recall"] > 0.99 and flat["qps_batch"] > 0 and flat["qps_single"] > 0
    ivf = json.loads((tmp_path / "ivf" / "manifest.json").read_text())
    # With nprobe forced to 1 on the stored index, IVF must miss some true neighbours.
    ivf["search_params"] = {"nprobe": 1}
    (tmp_path / "ivf" / "manifest.json").write_text(json.dumps(ivf))
    coarse = ann(tmp_path / "ivf")
    assert coarse["index_type"] == "ivf" and coarse["search_params"] == {"nprobe": 1}
    assert 0.0 < coarse["ann_recall"] < 0.99


def test_a_flat_index_built_with_onnx_int8_has_perfect_recall(tmp_path, tiny_model_dir):
    """Exact search rates 1.000 only when a text's vector does not depend on the batch it was encoded in (#30)."""
    corpus_of_word_triples(tmp_path / "c.txt")
    built = CliRunner().invoke(main, ["index", "build", str(tmp_path / "c.txt"), "-o", str(tmp_path / "flat"), "--model", str(tiny_model_dir), "--type", "flat", "--backend", "onnx-int8"])
    assert built.exit_code == 0, built.output
    assert ann(tmp_path / "flat")["ann_recall"] == 1.0
