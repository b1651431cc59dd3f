"""`--type auto` by measurement: candidates built on a region sample, tuned to the target recall, the fastest kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from index.plan import format_bytes
from index.selection import CANDIDATES, TIE, region_sample, select_plan

N, DIM, CENTRES = 40_000, 32, 400
BUDGET = 60.0


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    """Unit vectors around 400 random centres (neighbourhoods exist, as in real embeddings), corpus order shuffled."""
    rng = np.random.default_rng(0)
    means = rng.standard_normal((CENTRES, DIM), dtype=np.float32)
    points = means[rng.integers(0, CENTRES, N)] / np.sqrt(DIM) * 3 + rng.standard_normal((N, DIM), dtype=np.float32) / np.sqrt(DIM)
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def roomy(vectors):
    return select_plan(vectors, 2**30, 0.95, BUDGET, seed=0)


def by_label(selection) -> dict:
    return {c.label: c for c in selection.candidates}


def test_every_candidate_is_listed_with_its_numbers_and_the_winner_is_the_fastest_that_reaches_the_target(roomy):
    records = by_label(roomy)
    assert set(records) == {c.label for c in CANDIDATES}
    for record in records.values():
        assert record.fits and record.measured and record.bytes > 0, record
        assert 0 <= record.recall_at_10 <= 1 and record.predicted_qps > 0 and record.build_seconds >= 0
        # IVF: the whole sample (its cost at n is modelled); the others: a quarter and the whole, to see how their cost grows.
        assert len(record.sample_qps) == (1 if record.index_type.startswith("ivf") else 2) and min(record.sample_qps) > 0
        assert record.reached == (record.recall_at_10 >= 0.95)
    assert records["flat"].recall_at_10 == pytest.approx(1.0) and records["flat"].search_params == {}
    winner = next(c for c in roomy.candidates if c.factory == roomy.plan.factory)
    reached = [c for c in roomy.candidates if c.reached]
    assert winner.reached and winner.predicted_qps >= (1 - TIE) * max(c.predicted_qps for c in reached)
    # Cheaper than exact search on this data: a 40,000-vector corpus measured on ~24,000 of them.
    assert roomy.plan.index_type != "flat" and winner.predicted_qps > records["flat"].predicted_qps
    assert 12_000 <= roomy.sample < N and roomy.queries == 1000 and not roomy.fallback
    assert any(winner.label in reason for reason in roomy.plan.reasons)


def test_the_choice_changes_when_max_memory_excludes_the_fastest(vectors, roomy):
    fastest = next(c for c in roomy.candidates if c.factory == roomy.plan.factory)
    tight = select_plan(vectors, fastest.bytes - 1, 0.95, BUDGET, seed=0)
    records = by_label(tight)
    assert tight.plan.factory != roomy.plan.factory
    assert not records[fastest.label].fits and not records[fastest.label].measured
    assert records[fastest.label].note == f"needs {format_bytes(fastest.bytes)}, over --max-memory {format_bytes(fastest.bytes - 1)}"
    winner = next(c for c in tight.candidates if c.factory == tight.plan.factory)
    assert winner.fits and winner.bytes < fastest.bytes
    assert any(fastest.label in reason and "over --max-memory" in reason for reason in tight.plan.reasons)


def test_the_same_seed_measures_the_same_sample_and_makes_the_same_choice(vectors, roomy):
    first, again = region_sample(vectors, 24_000, seed=0), region_sample(vectors, 24_000, seed=0)
    for a, b in zip((first.queries, first.quarter, first.whole), (again.queries, again.quarter, again.whole)):
        assert np.array_equal(a, b)
    other = region_sample(vectors, 24_000, seed=1)
    assert not np.array_equal(first.whole, other.whole)
    # Whole regions: the quarter lies inside the whole, the queries in neither, and every row once.
    assert set(first.quarter) < set(first.whole) and not set(first.queries) & set(first.whole)
    repeat = select_plan(vectors, 2**30, 0.95, BUDGET, seed=0)
    assert (repeat.plan.factory, repeat.plan.params) == (roomy.plan.factory, roomy.plan.params)
    assert [(c.label, c.recall_at_10, c.search_params) for c in repeat.candidates] == [(c.label, c.recall_at_10, c.search_params) for c in roomy.candidates]


@pytest.fixture
def corpus(tmp_path):
    """1,200 JSONL documents in the tiny model's vocabulary (ids 5000..)."""
    from test_engine_updates import sentences, write_jsonl

    return write_jsonl(tmp_path / "docs.jsonl", [{"id": 5000 + i, "text": t} for i, t in enumerate(sentences(1200, 3))])


def test_cli_auto_records_every_candidate_and_index_info_prints_them(tmp_path, corpus, tiny_model_dir):
    built = run("index", "build", corpus, "-o", tmp_path / "idx", "--model", tiny_model_dir, "--type", "auto", "--max-memory", "1G")
    assert built.exit_code == 0, built.output
    info = json.loads(run("index", "info", tmp_path / "idx", "--json").stdout)
    choice = info["choice"]
    assert choice["requested"] == "auto" and choice["auto_budget"] == 120.0
    selection = choice["selection"]
    assert selection["sample"] == 1200 and selection["queries"] == 120 and not selection["fallback"]  # the whole corpus: nothing to extrapolate
    rows = {r["label"]: r for r in selection["candidates"]}
    assert set(rows) >= {"flat", "sq8", "ivf", "ivfpq", "hnsw"}  # dim 32: the binary types too
    for row in rows.values():
        assert row["measured"] and row["recall_at_10"] is not None and row["predicted_qps"] > 0 and row["bytes"] > 0 and row["build_seconds"] >= 0
    winner = next(r for r in selection["candidates"] if r["factory"] == info["faiss_factory"])
    assert info["index_type"] == winner["index_type"] and info["document_count"] == 1200
    text = run("index", "info", tmp_path / "idx").stdout
    assert f"auto measured {len(rows)} of {len(rows)} candidates on 1200 sample vectors" in text
    marked = [line for line in text.splitlines() if line.startswith("  * ")]
    assert len(marked) == 1 and marked[0].split()[1] == winner["label"].split()[0]
    assert all(f"  {r['label']}" in text for r in selection["candidates"])
    hits = json.loads(run("query", tmp_path / "idx", "cat", "-k", "3", "--json").stdout)["hits"]
    assert len(hits) == 3


def test_a_budget_too_small_to_measure_anything_builds_flat_and_says_so_once(tmp_path, corpus, tiny_model_dir):
    built = run("index", "build", corpus, "-o", tmp_path / "idx", "--model", tiny_model_dir, "--type", "auto", "--auto-budget", "0")
    assert built.exit_code == 0, built.output
    line = "--auto-budget 0 s ran out before any candidate was measured: built flat (exact search)"
    assert built.stderr.count(line) == 1, built.stderr
    info = json.loads(run("index", "info", tmp_path / "idx", "--json").stdout)
    assert info["index_type"] == "flat" and info["choice"]["selection"]["fallback"]
    assert all(not r["measured"] and r["note"] == "not measured: --auto-budget spent" for r in info["choice"]["selection"]["candidates"])


def test_a_negative_budget_is_refused_before_any_encoding(tmp_path, corpus, tiny_model_dir):
    built = run("index", "build", corpus, "-o", tmp_path / "idx", "--model", tiny_model_dir, "--type", "auto", "--auto-budget", "-1")
    assert built.exit_code == 2 and "--auto-budget -1.0: must be 0 or more seconds" in built.stderr
    assert not (tmp_path / "idx").exists()


def test_resume_keeps_the_choice_measured_before_the_interruption(tmp_path, corpus, tiny_model_dir, monkeypatch):
    import index.assemble
    from common.corpus import CorpusSpec
    from conftest import crash_on_call
    from errors import Interrupted
    from index import BuildConfig
    from index.partial import SELECTION_NAME, partial_path
    from simsearch import api

    out = tmp_path / "idx"
    crash_on_call(monkeypatch, index.assemble, "keep_floats", 1, KeyboardInterrupt())
    with pytest.raises(Interrupted):
        api.build(CorpusSpec(corpus), out, BuildConfig(index_type="auto"), model=str(tiny_model_dir))
    saved = json.loads((partial_path(out) / SELECTION_NAME).read_text())
    monkeypatch.undo()
    manifest = api.build(CorpusSpec(corpus), out, BuildConfig(index_type="auto", resume=True), model=str(tiny_model_dir))
    assert manifest.choice["selection"] == saved["selection"]  # the same measurements (times included): not measured again
    assert manifest.faiss_factory == saved["plan"]["factory"] and manifest.document_count == 1200


def test_a_single_document_builds_flat_without_measuring(tmp_path, tiny_model_dir):
    (tmp_path / "one.txt").write_text("a man is playing guitar\n", encoding="utf-8")
    built = run("index", "build", tmp_path / "one.txt", "-o", tmp_path / "idx", "--model", tiny_model_dir, "--type", "auto")
    assert built.exit_code == 0 and "a single vector: nothing to measure: built flat (exact search)" in built.stderr, built.output
    hits = json.loads(run("query", tmp_path / "idx", "guitar", "--json").stdout)["hits"]
    assert [h["id"] for h in hits] == [1]  # line numbers


def test_a_memory_budget_no_index_fits_is_refused_before_any_encoding(tmp_path, corpus, tiny_model_dir):
    built = run("index", "build", corpus, "-o", tmp_path / "idx", "--model", tiny_model_dir, "--type", "auto", "--max-memory", "1K")
    assert built.exit_code == 2 and "--max-memory 1.0 KiB is too small for 1200 vectors of dimension 32" in built.stderr, built.output
    assert not (tmp_path / "idx").exists() and not (tmp_path / ".idx.partial").exists()  # nothing encoded (the writer's lock file stays, as always)
