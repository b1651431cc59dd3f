"""Report: JSON results in, markdown tables and plots out."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cli import main


def test_report_tables_sts_and_retrieval_and_plots_sweeps(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    sts = [{"spearman": 0.8203, "pearson": 0.8274, "n": 1379, "data": "/x/stsbenchmark.tsv.gz", "split": "test", "model": "base"},
           {"spearman": 0.3781, "pearson": 0.39, "n": 1361, "data": "/x/STS-B.test.data", "model": "base"},
           {"spearman": 0.8612, "pearson": 0.86, "n": 1379, "data": "/x/stsbenchmark.tsv.gz", "split": "test", "model": "trained"}]
    (results / "sts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sts))
    (results / "retrieval.json").write_text(json.dumps({"recall@10": 0.91, "mrr@10": 0.7512, "ndcg@10": 0.78, "map@100": 0.74, "queries": 309, "index": "/a/whiten-128", "model": "m"}))
    rows = [{"method": "full", "dim": 384, "spearman": {"mean": 0.82, "std": 0.0}}]
    rows += [{"method": m, "dim": d, "spearman": {"mean": 0.8 - d / 10000, "std": 0.01 if m == "jl" else 0.0}} for m in ("whiten", "jl") for d in (64, 128)]
    (results / "sweep.json").write_text(json.dumps({"documents": 5000, "model_dim": 384, "rows": rows}))  # `reduce sweep --json`
    bench = [{"kind": "index-bench", "dataset": "shared (33,638 x 384)", "type": "ours hnsw (IDMap2,HNSW32, efSearch=32)", "n": 33638,
              "build_s": 13.31, "bytes_per_vector": 1816, "qps_batch": 29060.4, "qps_single": 5297.2, "recall@10": 0.9633, "note": ""}]
    (results / "index-bench.json").write_text(json.dumps(bench))  # `benchmarks/index_engine.py --json`
    out = tmp_path / "docs" / "report.md"
    result = CliRunner().invoke(main, ["report", str(results), "-o", str(out), "--title", "Bench"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith("# Bench")
    assert "| base    | 82.03 (82.74)" in text and "| 37.81 (39.00)" in text and "| trained | 86.12 (86.00)" in text
    assert "| whiten-128    |     309 | 0.9100" in text and "0.7512" in text
    assert "## Dimension sweep" in text and "| jl     | 128 | 0.7872 ± 0.0100 |" in text
    assert "## Index types" in text and "| 13.3    | 1,816        | 29,060    | 5,297             | 0.963     |" in text
    assert "![report-dims](report-dims.png)" in text and "![report-recall-qps](report-recall-qps.png)" in text
    assert (out.parent / "report-dims.png").read_bytes()[:4] == b"\x89PNG"


def test_report_names_a_broken_results_file(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"spearman": 1}\n{oops\n')
    result = CliRunner().invoke(main, ["report", str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "r.md")])
    assert result.exit_code == 1 and "bad.jsonl:2: not valid JSON" in result.stderr
    assert not (tmp_path / "r.md").exists()
