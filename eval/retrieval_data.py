"""Load retrieval queries (TSV/JSONL: qid, text) and relevance judgements (TREC qrels or TSV)."""

from __future__ import annotations

import math
from pathlib import Path

from common.corpus import decoded_lines, json_object
from errors import DataError

_QID_HEADERS = {"qid", "query_id", "query-id", "id", "_id"}


def load_queries(path: Path | str) -> dict[str, str]:
    """Query id → text, in file order. TSV `qid<TAB>text` (header optional) or JSONL with qid/id/_id and text."""
    path = Path(path)
    queries: dict[str, str] = {}
    for lineno, line in decoded_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        if path.suffix in (".jsonl", ".ndjson") or line.lstrip().startswith("{"):
            qid, text = _json_query(line, where)
        else:
            fields = line.split("\t")
            if len(fields) < 2:
                raise DataError(f"{where}: expected qid<TAB>text")
            if lineno == 1 and fields[0].strip().lower() in _QID_HEADERS:
                continue
            qid, text = fields[0].strip(), "\t".join(fields[1:]).strip()
        if qid in queries:
            raise DataError(f"{where}: query id {qid!r} appears twice")
        if not text:
            raise DataError(f"{where}: query {qid!r} has no text")
        queries[qid] = text
    if not queries:
        raise DataError(f"{path}: no queries")
    return queries


def _json_query(line: str, where: str) -> tuple[str, str]:
    record = json_object(line, where)
    qid = next((record[k] for k in ("qid", "query_id", "id", "_id") if k in record), None)
    if qid is None or not isinstance(record.get("text"), str):
        raise DataError(f"{where}: expected an object with a query id (qid/id/_id) and a 'text' string")
    return str(qid), record["text"].strip()


def load_qrels(path: Path | str) -> dict[str, dict[str, int]]:
    """Query id → {doc id → relevance}. TREC `qid iter docid rel` (spaces) or TSV `qid docid rel` (header optional)."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in decoded_lines(path):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) == 4:
            qid, _, docid, rel = fields
        elif len(fields) == 3:
            qid, docid, rel = fields
        else:
            raise DataError(f"{where}: expected 'qid iter docid relevance' or 'qid docid relevance', found {len(fields)} fields")
        try:
            number = float(rel)
        except ValueError:
            if lineno == 1:
                continue  # header row
            raise DataError(f"{where}: relevance {rel!r} is not a number") from None
        if not math.isfinite(number):
            raise DataError(f"{where}: relevance {rel!r} is not a finite number")
        relevance = int(number)
        qrels.setdefault(qid, {})[docid] = relevance
    if not qrels:
        raise DataError(f"{path}: no judgements")
    return qrels
