"""SQLite table of document texts and metadata, keyed by the same int64 ids as the vectors."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.corpus import Document
from errors import DataError, SimsearchError, UsageError, WriteFailed
from index import lexical

STORE_NAME = "docs.sqlite"
FREQ_CACHE = 100_000  # terms whose document frequency a store remembers


def json_path(field: str) -> str:
    """SQLite JSON path of a top-level metadata field (quoted, so dots and spaces are literal)."""
    return '$."' + field.replace('"', '\\"') + '"'


def write_failed(path: Path | None, exc: sqlite3.OperationalError) -> WriteFailed:
    """SQLite's report of a full or read-only disk as one line naming the file."""
    return WriteFailed(f"{path}: SQLite could not write it ({exc}): is the disk full or read-only?")


class DocStore:
    """Texts and metadata of an index; vectors live in FAISS, everything readable lives here."""

    def __init__(self, connection: sqlite3.Connection, path: Path | None = None) -> None:
        self._db = connection
        self.path = path
        found = connection.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (lexical.TABLE,)).fetchone()
        self.has_lexical = found is not None  # False in a store written before the lexical index existed
        self._freq: dict[str, int] = {}  # term → documents holding it (lexical_search's cache; cleared by every write)
        self._documents: int | None = None

    @classmethod
    def create(cls, path: Path) -> DocStore:
        """A new, empty store with its lexical (FTS5) index (~25 KB on disk before the first document)."""
        db = sqlite3.connect(path)
        try:
            with db:
                db.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, text TEXT NOT NULL, metadata TEXT)")
                db.execute(lexical.CREATE_SQL)
        except sqlite3.OperationalError as exc:
            db.close()
            raise write_failed(path, exc) from None
        return cls(db, path)

    @classmethod
    def open(cls, path: Path) -> DocStore:
        """Open read-only, so a query can never change an index.

        A file gone by now (a writer pruned this version after the reader resolved it)
        is a DataError, which `read_consistently` retries on the new version.
        """
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        except sqlite3.OperationalError as exc:
            raise DataError(f"{path}: cannot open the document store ({exc})") from None
        return cls._checked(db, path)

    @classmethod
    def open_writable(cls, path: Path) -> DocStore:
        return cls._checked(sqlite3.connect(path), path)

    @classmethod
    def _checked(cls, db: sqlite3.Connection, path: Path) -> DocStore:
        """The store, once SQLite has read its `docs` table: a damaged or foreign file is a one-line DataError."""
        try:
            db.execute("SELECT id, text, metadata FROM docs LIMIT 0")
        except sqlite3.DatabaseError as exc:
            db.close()
            raise DataError(f"{path}: not a simsearch document store ({exc})") from None
        return cls(db, path)

    def add(self, documents: Iterable[Document], replace: bool = False) -> None:
        """Insert documents in one transaction; `replace` overwrites rows whose id exists (upsert, resumed builds)."""
        documents = list(documents)
        rows = ((d.id, d.text, json.dumps(d.metadata, ensure_ascii=False) if d.metadata else None) for d in documents)
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        try:
            with self._db:
                if replace:
                    self._unindex([d.id for d in documents])
                self._db.executemany(f"{verb} INTO docs (id, text, metadata) VALUES (?, ?, ?)", rows)
                self._index((d.id, d.text) for d in documents)
        except sqlite3.OperationalError as exc:  # SQLite's report of a full or read-only disk
            raise write_failed(self.path, exc) from None

    def remove(self, ids: Sequence[int]) -> None:
        with self._db:
            self._unindex(ids)
            self._db.executemany("DELETE FROM docs WHERE id = ?", ((int(i),) for i in ids))

    def _index(self, rows: Iterable[tuple[int, str]]) -> None:
        """Add (id, text) rows to the lexical index (inside the caller's transaction)."""
        if self.has_lexical:
            self._forget_frequencies()
            rows = ((doc_id, lexical.lexical_text(text)) for doc_id, text in rows)
            self._db.executemany(f"INSERT INTO {lexical.TABLE} (rowid, text) VALUES (?, ?)", rows)

    def _unindex(self, ids: Sequence[int]) -> None:
        """Take the stored texts of `ids` out of the lexical index (a contentless FTS5 table is told the terms it indexed)."""
        if self.has_lexical:
            self._forget_frequencies()
            old = [(doc_id, lexical.lexical_text(self._text(doc_id, text))) for doc_id, text in self._rows(ids, "text")]
            self._db.executemany(f"INSERT INTO {lexical.TABLE} ({lexical.TABLE}, rowid, text) VALUES ('delete', ?, ?)", old)

    def _forget_frequencies(self) -> None:
        """Drop what lexical_search remembered of the lexical index, which is about to change."""
        self._freq.clear()
        self._documents = None

    def build_lexical(self) -> None:
        """Create the lexical index of a store that has none (an older index), from every stored text."""
        if self.has_lexical:
            return
        with self._db:
            self._db.execute(lexical.CREATE_SQL)
            self.has_lexical = True
            for ids, texts in self.iter_texts():
                self._index(zip(ids, texts))

    def lexical_search(self, query: str, k: int, where: dict[str, str] | None = None) -> list[tuple[int, float]]:
        """The k best (id, BM25 score) for `query` among documents matching `where` (higher is better; FTS5's rank is negated).

        Ties are broken by id, so a ranking is the same whichever expressions (index.lexical) it took.
        """
        if not self.has_lexical:
            folder = self.path.parent if self.path else "the index"
            raise UsageError(f"{folder}: this index {lexical.missing('DIR')}")
        terms = lexical.query_terms(query)
        if not terms:
            return []
        condition, args = self._where_sql(where)
        sql = f"SELECT rowid, -rank FROM {lexical.TABLE} WHERE {lexical.TABLE} MATCH ?"
        if condition:
            sql += f" AND rowid IN (SELECT id FROM docs WHERE {condition})"
        found = [
            (int(i), float(s))
            for expression in lexical.match_expressions(terms, self._doc_freq(terms), self._lexical_documents())
            for i, s in self._db.execute(sql + " ORDER BY rank LIMIT ?", (expression, *args, k))
        ]
        return sorted(found, key=lambda hit: (-hit[1], hit[0]))[:k]

    def _doc_freq(self, terms: Sequence[str]) -> dict[str, int]:
        """How many documents hold each term (FTS5 stems it as it does in a query), remembered until the store changes."""
        for term in terms:
            if term not in self._freq:
                if len(self._freq) >= FREQ_CACHE:
                    self._freq.clear()
                query = f"SELECT COUNT(*) FROM {lexical.TABLE} WHERE {lexical.TABLE} MATCH ?"
                self._freq[term] = int(self._db.execute(query, (lexical.any_of([term]),)).fetchone()[0])
        return {term: self._freq[term] for term in terms}

    def _lexical_documents(self) -> int:
        """Documents in the lexical index, remembered until the store changes."""
        if self._documents is None:
            self._documents = self.lexical_count()
        return self._documents

    def lexical_count(self) -> int:
        """Documents in the lexical index (0 when there is none)."""
        return int(self._db.execute(f"SELECT COUNT(*) FROM {lexical.TABLE}").fetchone()[0]) if self.has_lexical else 0

    def existing(self, ids: Sequence[int]) -> set[int]:
        """The subset of `ids` present in the store."""
        return set(self.get(ids))

    @staticmethod
    def _where_sql(where: dict[str, str] | None) -> tuple[str, list[str]]:
        """SQL condition on `docs` for every field=value of `where` (values compared as text, so 3 matches "3"); '' for none."""
        if not where:
            return "", []
        tests = " AND ".join("CAST(json_extract(metadata, ?) AS TEXT) = ?" for _ in where)
        return f"metadata IS NOT NULL AND {tests}", [item for name, value in where.items() for item in (json_path(name), value)]

    def ids_where(self, where: dict[str, str]) -> list[int]:
        """Ids whose metadata matches every field=value of `where`."""
        condition, args = self._where_sql(where)
        return [row[0] for row in self._db.execute(f"SELECT id FROM docs WHERE {condition or '1'}", args)]

    def metadata_fields(self) -> list[str]:
        """Every top-level metadata field name used by some document (what a `where` filter can name)."""
        try:
            rows = self._db.execute("SELECT DISTINCT j.key FROM docs, json_each(docs.metadata) AS j WHERE docs.metadata IS NOT NULL ORDER BY 1").fetchall()
        except sqlite3.OperationalError as exc:  # SQLite's json_each on a row that is not JSON
            raise DataError(f"{self.path}: the metadata of some document is not JSON ({exc}); run `simsearch index verify`") from None
        return [row[0] for row in rows]

    def get(self, ids: Sequence[int]) -> dict[int, tuple[str, dict[str, Any]]]:
        """Text and metadata for each id that exists."""
        return {doc_id: (self._text(doc_id, text), self._metadata(doc_id, meta)) for doc_id, text, meta in self._rows(ids, "text, metadata")}

    def _rows(self, ids: Sequence[int], columns: str) -> Iterator[tuple[Any, ...]]:
        """(id, *columns) of each distinct id that exists, 500 ids a query (under SQLite's bound-parameter limit)."""
        unique = list(dict.fromkeys(int(i) for i in ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            yield from self._db.execute(f"SELECT id, {columns} FROM docs WHERE id IN ({','.join('?' * len(chunk))})", chunk)

    def _text(self, doc_id: int, text: Any) -> str:
        if not isinstance(text, str):
            raise DataError(f"{self.path}: document {doc_id}: its text is not text ({type(text).__name__}); run `simsearch index verify`")
        return text

    def _metadata(self, doc_id: int, raw: Any) -> dict[str, Any]:
        """A row's metadata: a JSON object, or a one-line DataError naming the document (a damaged or hand-edited store)."""
        if raw is None or raw == "":
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{self.path}: document {doc_id}: metadata is not JSON ({str(exc).splitlines()[0]}); run `simsearch index verify`") from None
        if not isinstance(value, dict):
            raise DataError(f"{self.path}: document {doc_id}: metadata is {type(value).__name__}, not a JSON object; run `simsearch index verify`")
        return value

    def check_rows(self, chunk: int = 2048) -> None:
        """Read every row as a search would (id, text, metadata), so `index verify` finds what a query would trip on."""
        last = -1
        while rows := self._db.execute("SELECT id, text, metadata FROM docs WHERE id > ? ORDER BY id LIMIT ?", (last, chunk)).fetchall():
            for doc_id, text, meta in rows:
                self._text(doc_id, text)
                self._metadata(doc_id, meta)
            last = rows[-1][0]

    def iter_texts(self, chunk: int = 2048) -> Iterator[tuple[list[int], list[str]]]:
        """All (ids, texts) in id order, `chunk` rows at a time, so a large store is never held at once."""
        last = None
        while True:
            where, args = ("WHERE id > ?", (last, chunk)) if last is not None else ("", (chunk,))
            rows = self._db.execute(f"SELECT id, text FROM docs {where} ORDER BY id LIMIT ?", args).fetchall()
            if not rows:
                return
            yield [r[0] for r in rows], [r[1] for r in rows]
            last = rows[-1][0]

    def sample(self, n: int, seed: int = 0) -> dict[int, str]:
        """Up to `n` documents (id → text) drawn uniformly at random, reproducibly for a seed."""
        ids = [row[0] for row in self._db.execute("SELECT id FROM docs ORDER BY id")]
        picked = np.random.default_rng(seed).choice(len(ids), size=min(n, len(ids)), replace=False)
        return {int(i): text for i, (text, _) in self.get([ids[j] for j in sorted(picked)]).items()}

    def largest_id(self) -> int:
        """The largest id stored, -1 when empty."""
        return int(self._db.execute("SELECT COALESCE(MAX(id), -1) FROM docs").fetchone()[0])

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    def close(self) -> None:
        self._db.close()
