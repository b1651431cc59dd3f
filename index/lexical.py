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

Scoring is what costs (≈1.3 µs a matching document; an OR of "the", "a" and
"is" matches most of a corpus), so a query whose terms have many postings is
split as Lucene's CommonTermsQuery does: documents must hold one of its rare
terms (in at most 2 % of documents), and are scored by all its terms. Every
such document gets its exact BM25 score; only documents holding nothing but
common terms are left out.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
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


def cjk_share(texts: Iterable[str]) -> float:
    """The share of CJK characters among the word characters of `texts` (0 for none): how much of a corpus BM25 reads as bigrams."""
    cjk = words = 0
    for text in texts:
        cjk += sum(map(len, _CJK_RUN.findall(text)))
        words += sum(map(len, _TERM.findall(text)))
    return cjk / words if words else 0.0


COMMON_SHARE = 0.02  # a term in more than this share of the documents is common
EXACT_POSTINGS = 5_000  # a query whose terms have at most this many postings in all is scored whole


def query_terms(query: str) -> list[str]:
    """The query's distinct terms as FTS5 will see them (before stemming), in order."""
    return list(dict.fromkeys(term.lower() for term in _TERM.findall(lexical_text(query))))


def any_of(terms: Sequence[str]) -> str:
    """An FTS5 MATCH expression ORing `terms`, each quoted, so no user text is read as FTS5 syntax."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


def match_expressions(terms: Sequence[str], doc_freq: dict[str, int], documents: int) -> list[str]:
    """The MATCH expressions whose hits, merged by score, are the query's ranking: the whole OR when that is cheap,
    else (rare AND common) and (rare NOT common), two disjoint sets scored by every term."""
    cutoff = COMMON_SHARE * documents
    rare = [term for term in terms if doc_freq[term] <= cutoff]
    common = [term for term in terms if doc_freq[term] > cutoff]
    if sum(doc_freq.values()) <= EXACT_POSTINGS or not rare or not common:
        return [any_of(terms)]
    return [f"({any_of(rare)}) AND ({any_of(common)})", f"({any_of(rare)}) NOT ({any_of(common)})"]
