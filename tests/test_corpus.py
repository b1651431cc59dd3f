"""Corpus reading: formats, ids, metadata, blank lines, and errors that name file and line."""

from __future__ import annotations

import json

import pytest

from common.corpus import CorpusSpec, CorpusStats, read_corpus, scan_corpus
from errors import DataError, UsageError


def write(tmp_path, name, content, mode="w"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_plain_text_ids_are_line_numbers_and_blanks_are_counted(tmp_path):
    path = write(tmp_path, "c.txt", "first\n\n  \nsecond\nfirst\n")
    stats = CorpusStats()
    docs = list(read_corpus(CorpusSpec(path), stats))
    assert [(d.id, d.text) for d in docs] == [(1, "first"), (4, "second"), (5, "first")]
    assert (stats.documents, stats.blank) == (3, 2)


def test_tsv_with_id_column_keeps_other_columns_as_metadata(tmp_path):
    path = write(tmp_path, "c.tsv", "doc\tbody\tlang\n7\tHello there\ten\n9\t\"quoted\" text\tfr\n")
    docs = list(read_corpus(CorpusSpec(path, text_column="body", id_column="doc")))
    assert [(d.id, d.text, d.metadata) for d in docs] == [(7, "Hello there", {"lang": "en"}), (9, '"quoted" text', {"lang": "fr"})]


def test_csv_handles_quoted_commas_and_defaults_ids_to_line_numbers(tmp_path):
    path = write(tmp_path, "c.csv", 'text,source\n"Hello, world",web\nPlain,book\n')
    docs = list(read_corpus(CorpusSpec(path)))
    assert [(d.id, d.text, d.metadata) for d in docs] == [(2, "Hello, world", {"source": "web"}), (3, "Plain", {"source": "book"})]


def test_jsonl_keeps_extra_fields_as_metadata(tmp_path):
    rows = [{"text": "one", "id": 10, "tags": ["a"]}, {"text": "two", "year": 2020}]
    path = write(tmp_path, "c.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    docs = list(read_corpus(CorpusSpec(path)))
    assert [(d.id, d.text, d.metadata) for d in docs] == [(10, "one", {"tags": ["a"]}), (2, "two", {"year": 2020})]


@pytest.mark.parametrize(
    ("name", "content", "spec_kwargs", "error", "message"),
    [
        ("bad.txt", b"fine\nbad \xff byte\n", {}, DataError, "bad.txt:2: not valid UTF-8"),
        ("c.tsv", "id\tbody\n1\tx\n", {}, UsageError, "c.tsv:1: no column 'text'"),
        ("c.tsv", "text\tid\nhello\tseven\n", {"id_column": "id"}, DataError, "c.tsv:2: id 'seven' is not an integer"),
        ("c.tsv", "text\tlang\nhello\ten\textra\n", {}, DataError, "c.tsv:2: expected 2 fields"),
        ("c.jsonl", '{"text": "ok"}\n{"text": 5}\n', {}, DataError, "c.jsonl:2: field 'text' is not a string"),
        ("c.jsonl", '{"text": "ok"}\n{broken\n', {}, DataError, "c.jsonl:2: not valid JSON"),
        ("c.jsonl", '{"text": "a", "id": 3}\n{"text": "b", "id": 3}\n', {}, DataError, "id 3 appears twice"),
        ("empty.txt", "\n\n", {}, DataError, "empty.txt: no documents to index (2 blank lines)"),
    ],
)
def test_bad_input_is_reported_with_file_and_line(tmp_path, name, content, spec_kwargs, error, message):
    path = write(tmp_path, name, content)
    with pytest.raises(error) as caught:
        scan_corpus(CorpusSpec(path, **spec_kwargs))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        scan_corpus(CorpusSpec(tmp_path / "nope.txt"))
