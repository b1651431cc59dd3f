"""The lexical (BM25) side of an index: how texts become FTS5 terms, and how a query becomes an FTS5 match.

The lexical index is an SQLite FTS5 table inside `docs.sqlite`, so it changes in
the same transaction and the same atomic swap as the texts (index.store). It is
contentless (`content=''`): it holds only the inverted lists, not a second copy
of the texts. FTS5's unicode61 tokenizer splits on spaces and punctuation, which
leaves a Chinese or Japanese sentence as one long token; so runs of CJK
characters are rewritten before indexing into their single characters and
overlapping character pairs (the CJK bigram scheme of Lucene's CJKAnalyzer, plus
unigrams so that one-character queries match). English words go through FTS5's
porter stemmer. Queries are rewritten the same way, and every term is ORed:
bm25() then ranks documents by the terms they share.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

TABLE = "lexical"
TOKENIZE = "porter unicode61 remove_diacritics 2"
VERSION = 1  # of the rewriting below: a deletion must give FTS5 the same terms the insertion gave it
DESCRIPTION: dict[str, Any] = {
    "engine": "sqlite-fts5", "table": TABLE, "tokenize": TOKENIZE, "cjk": "unigrams+bigrams", "ranking": "bm25", "version": VERSION,
}
ADD_COMMAND = "simsearch index lexical"  # gives an older index folder (no lexical table) its lexical index


def missing(folder: object) -> str:
    """The one message for lexical search on a folder that has no lexical index, naming the command that adds it."""
    return f"has no lexical index (built by an older simsearch); add one with `{ADD_COMMAND} {folder}`"


CREATE_SQL = f"CREATE VIRTUAL TABLE {TABLE} USING fts5(text, content='', tokenize='{TOKENIZE}')"

# Han (with extension A and compatibility ideographs), kana and Hangul: scripts written without spaces between words.
_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+")
_TERM = re.compile(r"\w+")


def _grams(run: str) -> str:
    """A CJK run as its characters and overlapping character pairs, space-separated."""
    return " ".join([*run, *(run[i : i + 2] for i in range(len(run) - 1))])


def lexical_text(text: str) -> str:
    """What FTS5 indexes for a document: NFKC-normalised text (full-width forms folded) with CJK runs split into grams."""
    return _CJK_RUN.sub(lambda run: f" {_grams(run.group())} ", unicodedata.normalize("NFKC", text))


def match_expression(query: str) -> str:
    """An FTS5 MATCH expression ORing the query's distinct terms, each quoted (no user text is read as FTS5 syntax); '' for none."""
    terms = dict.fromkeys(term.lower() for term in _TERM.findall(lexical_text(query)))
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
