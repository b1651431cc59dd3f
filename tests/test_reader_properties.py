"""Property tests: any bytes given to a reader (corpus, STS, queries/qrels, training data) load or raise the project's own error.

Never another exception: a hostile or damaged file must end in a one-line message,
not a traceback. Bytes are drawn both at random and from structured near-misses
(lines of cells with tabs, commas, quotes, braces, numbers such as nan and inf).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.corpus import CorpusSpec, scan_corpus
from common.sts_data import load_sts
from embedder.training_data import read_training_data
from errors import SimsearchError
from eval.retrieval_data import load_qrels, load_queries

CELLS = st.sampled_from(["", "a dog", "1", "-1", "3.5", "nan", "inf", "-inf", "1e999", "9" * 25, '"', '{"id": 1}', "[", "{", "\\", "é", "\x00", "text", "id", "score", "s1", "s2"])
LINE = st.lists(CELLS, max_size=5).flatmap(lambda cells: st.sampled_from(["\t", ",", " "]).map(lambda sep: sep.join(cells)))
TEXTISH = st.lists(LINE, max_size=8).map(lambda lines: "\n".join(lines).encode("utf-8"))
CONTENT = st.one_of(st.binary(max_size=300), TEXTISH)
READERS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "corpus-text": (".txt", lambda p: scan_corpus(CorpusSpec(p))),
    "corpus-tsv": (".tsv", lambda p: scan_corpus(CorpusSpec(p, id_column="id"))),
    "corpus-csv": (".csv", lambda p: scan_corpus(CorpusSpec(p))),
    "corpus-jsonl": (".jsonl", lambda p: scan_corpus(CorpusSpec(p))),
    "sts-tsv": (".tsv", load_sts),
    "sts-csv": (".csv", lambda p: load_sts(p, None)),
    "sts-jsonl": (".jsonl", load_sts),
    "queries": (".tsv", load_queries),
    "qrels": (".tsv", load_qrels),
    "train-cosent": (".tsv", lambda p: read_training_data("cosent", p)),
    "train-simcse-unsup": (".txt", lambda p: read_training_data("simcse-unsup", p)),
    "train-simcse-sup": (".jsonl", lambda p: read_training_data("simcse-sup", p)),
}


@pytest.mark.parametrize("reader", sorted(READERS))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=CONTENT)
def test_any_bytes_load_or_raise_our_error(reader, content):
    suffix, read = READERS[reader]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(content)
        try:
            read(path)
        except SimsearchError as exc:
            assert "\n" not in str(exc).strip()
