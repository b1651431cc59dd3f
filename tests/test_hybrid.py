"""`--mode auto|dense|lexical|hybrid`: BM25 beside the vectors, fused by reciprocal rank or weighted scores (CLI, Python API, server)."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from cli import main
from common.corpus import CorpusSpec
from errors import UsageError
from index import BuildConfig, lexical
from index.fusion import SearchOptions, auto_alpha, fuse
from index.manifest import Manifest
from index.store import STORE_NAME
from simsearch import api


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def order_rows(count: int = 300) -> list[dict]:
    """Order notes whose product codes look alike (digits of 4471 shuffled, or random); exactly one has XK-4471."""
    rng = random.Random(0)
    lookalikes = ["1744", "4417", "4714", "7144", "1447", "4741", "4174", "7414"]
    items = ["blue widgets", "steel bolts", "copper wire", "oak planks", "glass jars", "rubber seals"]
    rows = []
    for i in range(1, count + 1):
        code = f"{rng.choice(lookalikes)}{rng.randint(0, 9)}" if rng.random() < 0.5 else str(rng.randint(1000, 9999))
        code = "4471" if i == 137 else ("4472" if code == "4471" else code)
        text = f"order of {rng.choice(items)} XK-{code} shipped to the {rng.choice(['north', 'south', 'east'])} warehouse"
        rows.append({"id": i, "text": text, "site": "north" if i % 2 else "south"})
    return rows


@pytest.fixture(scope="module")
def orders(tmp_path_factory, default_encoder) -> Path:
    root = tmp_path_factory.mktemp("hybrid")
    api.build(CorpusSpec(write_jsonl(root / "orders.jsonl", order_rows())), root / "idx", BuildConfig(show_progress=False), encoder=default_encoder)
    return root / "idx"


def ids(folder: Path, encoder, text: str, k: int = 3, where=None, **options) -> list[int]:
    index = api.open_index(folder, encoder=encoder)
    return [hit.id for hit in index.search([text], k, where=where, options=SearchOptions(**options))[0]]


def test_a_rare_code_is_missed_by_dense_found_by_lexical_and_kept_by_hybrid(orders, default_encoder):
    query = "XK-4471"
    assert 137 not in ids(orders, default_encoder, query, k=3, mode="dense")
    assert ids(orders, default_encoder, query, mode="lexical")[0] == 137
    assert 137 in ids(orders, default_encoder, query, k=3, mode="hybrid")
    assert 137 in ids(orders, default_encoder, query, k=3, mode="hybrid", fusion="weighted", alpha=0.3)


def test_filters_apply_in_every_mode(orders, default_encoder):
    for mode in ("dense", "lexical", "hybrid"):
        found = ids(orders, default_encoder, "XK-4471 widgets", k=10, where={"site": "south"}, mode=mode)
        assert found and all(i % 2 == 0 for i in found), mode


def test_fusion_by_reciprocal_rank_and_by_weighted_scores():
    dense, lexical_side = [(1, 0.9), (2, 0.8), (3, 0.1)], [(3, 12.0), (4, 6.0)]
    rrf = fuse(dense, lexical_side, SearchOptions(mode="hybrid", rrf_k=60), k=4)
    assert [(f.id, f.dense_rank, f.lexical_rank) for f in rrf] == [(3, 3, 1), (1, 1, None), (2, 2, None), (4, None, 2)]
    assert rrf[0].score == pytest.approx(1 / 63 + 1 / 61)
    weighted = fuse(dense, lexical_side, SearchOptions(mode="hybrid", fusion="weighted", alpha=0.7), k=4)
    assert {f.id: round(f.score, 4) for f in weighted} == {1: 0.7, 2: round(0.7 * 0.875, 4), 3: 0.3, 4: 0.0}


def test_options_are_checked():
    for bad, message in [({"mode": "fuzzy"}, "mode 'fuzzy' is not one of auto, dense, lexical, hybrid"), ({"fusion": "max"}, "fusion 'max' is not one of rrf, weighted"),
                         ({"alpha": 1.5}, r"alpha 1.5 is outside \[0, 1\]"), ({"rrf_k": 0}, "rrf_k must be at least 1")]:
        with pytest.raises(UsageError, match=message):
            SearchOptions(**bad)


def test_auto_is_weighted_hybrid_at_the_index_alpha_and_dense_without_a_lexical_index():
    index_alpha = lambda: 0.42  # noqa: E731
    assert SearchOptions().resolved(True, index_alpha) == SearchOptions("hybrid", "weighted", alpha=0.42)
    assert SearchOptions().resolved(False, index_alpha) == SearchOptions("dense", "rrf")
    assert SearchOptions(fusion="rrf").resolved(True, index_alpha) == SearchOptions("hybrid", "rrf")  # what is told is kept
    assert SearchOptions(alpha=0.9).resolved(True, index_alpha).alpha == 0.9
    assert SearchOptions("hybrid").resolved(True, index_alpha) == SearchOptions("hybrid", "rrf")  # hybrid fuses by rrf unless told
    assert SearchOptions("hybrid", "weighted").resolved(True, index_alpha).alpha == 0.42
    assert (auto_alpha(0.0), auto_alpha(0.5), auto_alpha(1.0)) == (0.7, 0.5, 0.3)
    assert lexical.cjk_share(["the XK-4471 order"]) == 0.0 and lexical.cjk_share(["一个男人在弹吉他。"]) == 1.0
    assert lexical.cjk_share(["ab 中文"]) == 0.5 and lexical.cjk_share([]) == 0.0


def test_the_default_mode_serves_each_language_its_own_weight(orders, default_encoder, tmp_path):
    english = api.open_index(orders, encoder=default_encoder)
    assert english.resolve(SearchOptions()).label() == "hybrid-weighted-0.7"
    code = {hit.id: hit.ranks for hit in english.search(["XK-4471"], 3)[0]}[137]  # by default the rare code is kept in the top 3
    assert code["lexical_rank"] == 1 and code["dense_rank"] > 3
    rows = [{"id": i, "text": text} for i, text in enumerate(["一个男人在弹吉他。", "一只狗在草地上奔跑。", "A woman is slicing an onion."], 1)]
    api.build(CorpusSpec(write_jsonl(tmp_path / "zh.jsonl", rows)), tmp_path / "zh", BuildConfig(show_progress=False), encoder=default_encoder)
    assert api.open_index(tmp_path / "zh", encoder=default_encoder).resolve(SearchOptions()).label() == "hybrid-weighted-0.53"
    assert [h.id for h in api.query(tmp_path / "zh", "吉他", k=1).hits[0]] == [1]


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_modes_json_ranks_and_literal_syntax(orders):
    hybrid = cli("query", orders, "XK-4471", "--mode", "hybrid", "--json", "-k", "5")
    assert hybrid.exit_code == 0, hybrid.output
    hits = json.loads(hybrid.stdout)["hits"]
    assert all({"dense_rank", "lexical_rank", "score"} <= set(h) for h in hits) and any(h["lexical_rank"] == 1 for h in hits)
    dense = json.loads(cli("query", orders, "XK-4471", "--json", "--mode", "dense").stdout)["hits"]
    assert "dense_rank" not in dense[0]  # the dense shape is unchanged
    for text in ['NEAR("a', "x* AND -y OR ^z:", '"', "NOT"]:
        done = cli("query", orders, text, "--mode", "lexical")
        assert done.exit_code == 0 and "Error" not in done.output, (text, done.output)


@pytest.mark.parametrize(("args", "fragment"), [
    (["--mode", "fuzzy"], "'fuzzy' is not one of 'auto', 'dense', 'lexical', 'hybrid'"),
    (["--fusion", "max"], "'max' is not one of 'rrf', 'weighted'"),
    (["--alpha", "1.5"], "1.5 is not in the range 0.0<=x<=1.0"),
])
def test_cli_bad_options_exit_2_naming_the_choices(orders, args, fragment):
    done = cli("query", orders, "x", *args)
    assert done.exit_code == 2 and fragment in done.output


def test_an_index_without_a_lexical_index_names_the_command_that_adds_it(tmp_path, tiny_model_dir):
    rows = [{"id": 1, "text": "a man is playing guitar"}, {"id": 2, "text": "the dog sleeps"}]
    api.build(CorpusSpec(write_jsonl(tmp_path / "c.jsonl", rows)), tmp_path / "old", BuildConfig(show_progress=False), model=str(tiny_model_dir))
    version = (tmp_path / "old").resolve()
    with sqlite3.connect(version / STORE_NAME) as db:
        db.execute(f"DROP TABLE {lexical.TABLE}")
    manifest = Manifest.read(version)
    manifest.lexical = {}
    manifest.write(version)
    done = cli("query", tmp_path / "old", "guitar", "--mode", "hybrid")
    assert done.exit_code == 2 and done.stderr.strip() == (
        f"Error: {tmp_path / 'old'}: this index has no lexical index (built by an older simsearch); add one with `simsearch index lexical {tmp_path / 'old'}`"
    )
    assert cli("query", tmp_path / "old", "guitar").exit_code == 0  # dense keeps working
    assert cli("index", "lexical", tmp_path / "old").exit_code == 0
    assert json.loads(cli("query", tmp_path / "old", "guitar", "--mode", "lexical", "--json").stdout)["hits"][0]["id"] == 1


def test_eval_retrieval_takes_the_mode_and_says_it(orders, tmp_path):
    (tmp_path / "q.tsv").write_text("qid\ttext\nq1\tXK-4471\n", encoding="utf-8")
    (tmp_path / "qrels.tsv").write_text("q1\t137\t1\n", encoding="utf-8")
    results = {}
    for mode in ("dense", "lexical", "hybrid"):
        done = cli("eval", "retrieval", orders, "--queries", tmp_path / "q.tsv", "--qrels", tmp_path / "qrels.tsv", "--json", "--mode", mode)
        assert done.exit_code == 0, done.output
        results[mode] = json.loads(done.stdout)
    assert [r["mode"] for r in results.values()] == ["dense", "lexical", "hybrid-rrf"]
    auto = cli("eval", "retrieval", orders, "--queries", tmp_path / "q.tsv", "--qrels", tmp_path / "qrels.tsv", "--json")
    assert json.loads(auto.stdout)["mode"] == "hybrid-weighted-0.7" and json.loads(auto.stdout)["mrr@10"] >= 1 / 3 > results["dense"]["mrr@10"]
    assert results["lexical"]["mrr@10"] == 1.0 > results["dense"]["mrr@10"]


def test_the_server_searches_in_every_mode_and_answers_bad_options_with_422(orders):
    from test_serve import config_for, serving

    from server.registry import Registry

    with serving(config_for({"orders": orders}, ("orders",)), Registry.load([orders])) as url:
        body = {"queries": ["XK-4471"], "k": 3}
        for mode in ("dense", "lexical", "hybrid", None):  # None: the default, auto
            answer = httpx.post(f"{url}/indexes/idx/search", json=body | ({"mode": mode} if mode else {}))
            assert answer.status_code == 200, answer.text
            hits = answer.json()["results"][0]["hits"]
            assert len(hits) == 3 and (("lexical_rank" in hits[0]) == (mode != "dense"))
            assert (137 in [h["id"] for h in hits]) == (mode != "dense"), mode
        assert httpx.post(f"{url}/search", json=body | {"mode": "lexical"}).json()["results"][0]["hits"][0]["id"] == 137
        for extra, field in [({"mode": "fuzzy"}, "body.mode"), ({"alpha": 2}, "body.alpha"), ({"fusion": "max"}, "body.fusion"), ({"rrf_k": 0}, "body.rrf_k")]:
            answer = httpx.post(f"{url}/search", json=body | extra)
            assert answer.status_code == 422 and field in answer.json()["detail"], answer.text
        too_many = httpx.post(f"{url}/search", json=body | {"mode": "hybrid", "candidates": 100_000})
        assert too_many.status_code == 400 and "candidates" in too_many.json()["detail"]
