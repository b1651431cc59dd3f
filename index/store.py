"""SQLite table of document texts and metadata, keyed by the same int64 ids as the vectors."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from embedder.corpus import Document

STORE_NAME = "docs.sqlite"


class DocStore:
    """Texts and metadata of an index; vectors live in FAISS, everything readable lives here."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    @classmethod
    def create(cls, path: Path) -> DocStore:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, text TEXT NOT NULL, metadata TEXT)")
        return cls(db)

    @classmethod
    def open(cls, path: Path) -> DocStore:
        """Open read-only, so a query can never change an index."""
        return cls(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False))

    def add(self, documents: Iterable[Document]) -> None:
        rows = ((d.id, d.text, json.dumps(d.metadata, ensure_ascii=False) if d.metadata else None) for d in documents)
        with self._db:
            self._db.executemany("INSERT INTO docs (id, text, metadata) VALUES (?, ?, ?)", rows)

    def get(self, ids: Sequence[int]) -> dict[int, tuple[str, dict[str, Any]]]:
        """Text and metadata for each id that exists."""
        found: dict[int, tuple[str, dict[str, Any]]] = {}
        unique = list(dict.fromkeys(int(i) for i in ids))
        for start in range(0, len(unique), 500):  # stay under SQLite's bound-parameter limit
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for doc_id, text, meta in self._db.execute(f"SELECT id, text, metadata FROM docs WHERE id IN ({marks})", chunk):
                found[doc_id] = (text, json.loads(meta) if meta else {})
        return found

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    def close(self) -> None:
        self._db.close()
