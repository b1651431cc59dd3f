"""The lexical (BM25, SQLite FTS5) index inside docs.sqlite: written with the texts by every writer, literal queries, CJK bigrams."""

from __future__ import annotations

import json
import random
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import index.update
from cli import main
from common.corpus import CorpusSpec, Document
from conftest import DATA, crash_on_call, require
from errors import UsageError
from index import BuildConfig, lexical
from index.manifest import Manifest
from index.store import STORE_NAME, DocStore
from simsearch import api

STSB_ZH = DATA / "stsb-zh" / "STS-B.test.data"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def orders(count: int = 300, code_at: int = 137) -> list[dict]:
    """Hundreds of near-identical order notes; one of them carries the product code XK-4471."""
    rows = [{"id": i, "text": f"order {i} of blue widgets shipped to the north warehouse", "kind": "order"} for i in range(1, count + 1)]
    rows[code_at - 1]["text"] = "order of blue widgets XK-4471 shipped to the north warehouse"
    return rows


@pytest.fixture
def order_index(tmp_path, tiny_model_dir) -> Path:
    api.build(CorpusSpec(write_jsonl(tmp_path / "orders.jsonl", orders())), tmp_path / "idx", BuildConfig(show_progress=False), model=str(tiny_model_dir))
    return tmp_path / "idx"


def lexical_ids(folder: Path, query: str, k: int = 5, where: dict | None = None) -> list[int]:
    """The top lexical hits' ids, read from the index's current version."""
    store = DocStore.open(folder.resolve() / STORE_NAME)
    try:
        return [doc_id for doc_id, _ in store.lexical_search(query, k, where)]
    finally:
        store.close()


def test_a_rare_product_code_is_the_top_lexical_hit_and_the_manifest_says_how_it_is_tokenized(order_index):
    assert lexical_ids(order_index, "XK-4471")[0] == 137
    assert lexical_ids(order_index, "where is xk 4471?")[0] == 137
    assert Manifest.read(order_index).lexical == lexical.DESCRIPTION and lexical.DESCRIPTION["tokenize"].startswith("porter unicode61")
    assert lexical_ids(order_index, "widgets", k=3, where={"kind": "none"}) == []  # filters apply to the lexical side


@pytest.mark.parametrize(
    ("query", "finds"),
    [('"unbalanced', False), ("ware*", False), ("text:warehouse", True), ("-north", True), ("^order", True), ("NEAR(blue widgets)", True),
     ("AND", False), ("OR NOT", False), ("a AND b OR", False), ("'", False), ("*", False), ("(", False), ("widgets)", True)],
)
def test_fts5_syntax_in_a_query_is_searched_as_plain_words(order_index, query, finds):
    """No error and no operator: `ware*` is the word "ware", not a prefix of "warehouse", `-north` finds "north", `AND` is a word no order has."""
    assert (len(lexical_ids(order_index, query, k=3)) > 0) == finds


def test_operator_words_are_words(tmp_path, tiny_model_dir):
    rows = [{"id": 1, "text": "salt and pepper"}, {"id": 2, "text": "black or white"}, {"id": 3, "text": "not today"}, {"id": 4, "text": "near the river"}]
    api.build(CorpusSpec(write_jsonl(tmp_path / "c.jsonl", rows)), tmp_path / "idx", BuildConfig(show_progress=False), model=str(tiny_model_dir))
    assert [lexical_ids(tmp_path / "idx", word, k=1) for word in ("AND", "OR", "NOT", "NEAR")] == [[1], [2], [3], [4]]


def test_a_two_character_chinese_query_finds_its_document(tmp_path, tiny_model_dir):
    sentences = list(dict.fromkeys(line.split("\t")[0] for line in require(STSB_ZH).read_text(encoding="utf-8").splitlines()[:300]))
    rows = [{"id": i, "text": s} for i, s in enumerate(sentences, 1)]
    api.build(CorpusSpec(write_jsonl(tmp_path / "zh.jsonl", rows)), tmp_path / "idx", BuildConfig(show_progress=False), model=str(tiny_model_dir))
    pairs = Counter(p for s in sentences for p in {s[i : i + 2] for i in range(len(s) - 1)} if all("\u4e00" <= c <= "\u9fff" for c in p))
    checked = 0
    for word, count in pairs.items():
        if count == 1 and checked < 20:  # a two-character word found in exactly one sentence
            owner = next(r["id"] for r in rows if word in r["text"])
            assert lexical_ids(tmp_path / "idx", word, k=1) == [owner], word
            checked += 1
    assert checked == 20


def test_a_query_of_common_and_rare_terms_is_split_yet_ranks_as_one_bm25_query(tmp_path):
    """3,000 notes: "the report of item N says COLOR ANIMAL". The query's rare animals (a few notes each) bound what is
    scored; its common words (every note, or one in ten) still count in each score, as one whole OR query scores them."""
    rng = random.Random(0)
    colors, animals = [f"color{c}" for c in range(10)], [f"animal{a}" for a in range(500)]
    texts = {i: f"the report of item {i} says {rng.choice(colors)} {rng.choice(animals)}" for i in range(1, 3001)}
    store = DocStore.create(tmp_path / STORE_NAME)
    store.add(Document(i, text) for i, text in texts.items())
    query = "the report on color3 and animal7 or animal8"
    terms = lexical.query_terms(query)
    freq = {t: sum(t in text.split() for text in texts.values()) for t in terms}
    assert len(lexical.match_expressions(terms, freq, len(texts))) == 2  # the split is taken
    holders = sum(freq[t] for t in ("animal7", "animal8"))
    whole = f"SELECT rowid, -rank FROM {lexical.TABLE} WHERE {lexical.TABLE} MATCH ? ORDER BY rank, rowid LIMIT ?"
    with sqlite3.connect(tmp_path / STORE_NAME) as db:  # the same ranking from one whole OR query
        exact = [(int(i), float(s)) for i, s in db.execute(whole, (lexical.any_of(terms), holders))]
    found = store.lexical_search(query, holders)
    assert [i for i, _ in found] == [i for i, _ in exact] and [s for _, s in found] == pytest.approx([s for _, s in exact], rel=1e-9)
    assert {i for i, _ in found} == {i for i, text in texts.items() if {"animal7", "animal8"} & set(text.split())}
    assert len(store.lexical_search(query, holders + 10)) == holders  # notes holding only common words are left out
    store.close()


def test_add_upsert_remove_keep_the_lexical_side_in_step(order_index, tmp_path):
    api.add(order_index, CorpusSpec(write_jsonl(tmp_path / "more.jsonl", [{"id": 1001, "text": "a crate of zucchini"}])))
    assert lexical_ids(order_index, "zucchini") == [1001]
    api.add(order_index, CorpusSpec(write_jsonl(tmp_path / "fix.jsonl", [{"id": 1001, "text": "a crate of aubergines"}])), upsert=True)
    assert lexical_ids(order_index, "zucchini") == [] and lexical_ids(order_index, "aubergines") == [1001]
    api.remove(order_index, [137, 1001])
    assert lexical_ids(order_index, "XK-4471 aubergines") == []
    verified = api.verify(order_index)
    assert verified.documents == 299


def test_a_killed_add_leaves_both_sides_as_they_were(order_index, tmp_path, monkeypatch):
    crash_on_call(monkeypatch, index.update, "_finish", 1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        api.add(order_index, CorpusSpec(write_jsonl(tmp_path / "more.jsonl", [{"id": 1001, "text": "a crate of zucchini"}])))
    assert lexical_ids(order_index, "zucchini") == [] and api.verify(order_index).documents == 300


def test_an_index_without_a_lexical_side_gets_one_from_one_command(order_index):
    """An older folder (no FTS5 table, no `lexical` in its manifest): `index lexical DIR` adds it as a new version."""
    version = order_index.resolve()
    db = sqlite3.connect(version / STORE_NAME)
    db.execute(f"DROP TABLE {lexical.TABLE}")
    db.commit()
    db.execute("VACUUM")
    db.close()
    manifest = Manifest.read(version)
    manifest.lexical = {}
    manifest.write(version)
    with pytest.raises(UsageError, match=r"has no lexical index \(built by an older simsearch\); add one with `simsearch index lexical DIR`"):
        lexical_ids(order_index, "XK-4471")
    done = CliRunner().invoke(main, ["index", "lexical", str(order_index)])
    assert done.exit_code == 0, done.output
    assert "lexical index:" in done.stderr and "300 documents" in done.stderr
    assert order_index.resolve() != version and lexical_ids(order_index, "XK-4471")[0] == 137
    assert Manifest.read(order_index).lexical == lexical.DESCRIPTION and api.verify(order_index).documents == 300
    again = CliRunner().invoke(main, ["index", "lexical", str(order_index)])  # already there: nothing changes
    assert again.exit_code == 0 and order_index.resolve() != version


def test_verify_finds_a_lexical_side_out_of_step(order_index):
    version = order_index.resolve()
    db = sqlite3.connect(version / STORE_NAME)
    db.execute(f"INSERT INTO {lexical.TABLE} ({lexical.TABLE}, rowid, text) VALUES ('delete', 137, ?)", (lexical.lexical_text(orders()[136]["text"]),))
    db.commit()
    db.close()
    Manifest.read(version).write(version)  # checksums match again: only the counts can tell
    result = CliRunner().invoke(main, ["index", "verify", str(order_index)])
    assert result.exit_code == 1 and "the lexical index holds 299 of 300 documents" in result.stderr


WORDS = ["apple", "pear", "plum", "kiwi", "fig", "lime", "date", "melon"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["add", "upsert", "remove"]), st.integers(1, 12), st.lists(st.sampled_from(WORDS), min_size=1, max_size=4)), max_size=25))
def test_every_lexical_hit_exists_in_the_store_after_any_writes(tmp_path_factory, steps):
    store = DocStore.create(tmp_path_factory.mktemp("store") / STORE_NAME)
    texts: dict[int, str] = {}
    for action, doc_id, words in steps:
        if action == "remove":
            if doc_id in texts:
                store.remove([doc_id])
                del texts[doc_id]
        elif action == "upsert" or doc_id not in texts:
            store.add([Document(doc_id, " ".join(words), {})], replace=action == "upsert")
            texts[doc_id] = " ".join(words)
    assert store.lexical_count() == store.count() == len(texts)
    for word in WORDS:
        assert {i for i, _ in store.lexical_search(word, 50)} == {i for i, t in texts.items() if word in t.split()}
    store.close()
