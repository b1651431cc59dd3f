"""Read sentences, with ids and metadata, from plain text, TSV/CSV or JSONL files.

Ids default to the 1-based line number in the file, so a hit can always be traced
back to its line. Blank texts are skipped and counted. Every problem is reported
as a `DataError`/`UsageError` naming the file and line.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from errors import DataError, UsageError

FORMATS = ("text", "tsv", "csv", "jsonl", "parquet")
_EXTENSIONS = {
    ".txt": "text", ".text": "text", ".tsv": "tsv", ".tab": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
}
# Ids are non-negative int64: FAISS returns -1 for "no hit", so a negative id could never be found.
ID_RANGE = (0, 2**63 - 1)


@dataclass(frozen=True)
class Document:
    """One sentence to embed, with its stable id and any extra fields."""

    id: int
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    numbered: bool = False  # the id is the line number (no id in the file): `index add` gives such documents fresh ids


@dataclass(frozen=True)
class CorpusSpec:
    """Where a corpus is and how to read it; `format` None means from the extension; `path` may be an fsspec URL string (s3://...)."""

    path: Path | str
    text_column: str = "text"
    id_column: str | None = None
    format: str | None = None

    def resolved_format(self) -> str:
        if self.format:
            return self.format
        suffixes = [s for s in PurePosixPath(str(self.path)).suffixes if s != ".gz"]
        return _EXTENSIONS.get(suffixes[-1].lower() if suffixes else "", "text")


@dataclass
class CorpusStats:
    """Counts from one pass over a corpus."""

    documents: int = 0
    blank: int = 0
    numbered: int = 0  # documents without an id of their own (counted by scan_corpus(renumbered=True))
    own_ids: list[int] = field(default_factory=list)  # the ids the file gives, sorted (kept by scan_corpus(renumbered=True))


def is_url(path: Path | str) -> bool:
    """True for an fsspec URL such as s3://bucket/key (read with fsspec, an optional dependency)."""
    return isinstance(path, str) and "://" in path


def open_binary(path: Path | str):
    """A binary handle on a local file or an fsspec URL, gunzipped when the name ends in .gz."""
    if is_url(path):
        import fsspec

        return fsspec.open(path, "rb", compression="gzip" if path.endswith(".gz") else None).open()
    return (gzip.open if str(path).endswith(".gz") else open)(path, "rb")


def decoded_lines(path: Path | str) -> Iterator[tuple[int, str]]:
    """Yield (line number, text without line ending), failing on the first line that is not UTF-8."""
    try:
        with open_binary(path) as handle:
            for lineno, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not valid UTF-8 (byte {exc.start})") from None
                yield lineno, line.rstrip("\r\n")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder, expected a file") from None
    except (gzip.BadGzipFile, EOFError) as exc:
        raise DataError(f"{path}: broken gzip file ({exc})") from None


def csv_rows(path: Path | str, lines: Iterator[tuple[int, str]], delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of `lines` read as CSV, with csv's own errors (a bare carriage return in a field) as one-line DataErrors."""
    reader = csv.reader((line + "\n" for _, line in lines), delimiter=delimiter)
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None


def json_object(text: str, where: str) -> dict[str, Any]:
    """Parse `text` as one JSON object, or raise a DataError that starts with `where` (file or file:line)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(value).__name__}")
    return value


def _parse_id(value: Any, where: str, column: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DataError(f"{where}: {column} {value!r} is not an integer")
    try:
        number = int(value)
    except ValueError:
        raise DataError(f"{where}: {column} {value!r} is not an integer") from None
    if not ID_RANGE[0] <= number <= ID_RANGE[1]:
        raise DataError(f"{where}: {column} {value!r} is outside 0 … 2^63-1 (ids are non-negative int64)")
    return number


def _read_text(spec: CorpusSpec, stats: CorpusStats) -> Iterator[Document]:
    for lineno, line in decoded_lines(spec.path):
        text = line.strip()
        if not text:
            stats.blank += 1
            continue
        yield Document(lineno, text, numbered=True)


def _header_index(spec: CorpusSpec, header: list[str], column: str, option: str) -> int:
    if column not in header:
        shown = ", ".join(name if name.isprintable() else repr(name) for name in header)
        raise UsageError(f"{spec.path}:1: no column {column!r} for {option} (columns: {shown})")
    return header.index(column)


def _read_table(spec: CorpusSpec, stats: CorpusStats, delimiter: str) -> Iterator[Document]:
    lines = decoded_lines(spec.path)
    # TSV is read literally (quotes are text); CSV follows the usual quoting rules.
    if delimiter == "\t":
        rows: Iterator[tuple[int, list[str]]] = ((n, line.split("\t")) for n, line in lines)
    else:
        rows = csv_rows(spec.path, lines, delimiter)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataError(f"{spec.path}: empty file, expected a header line") from None
    header = [name.strip() for name in header]
    text_at = _header_index(spec, header, spec.text_column, "--text-column")
    id_at = _header_index(spec, header, spec.id_column, "--id-column") if spec.id_column else None
    for lineno, row in rows:
        if not any(cell.strip() for cell in row):
            stats.blank += 1
            continue
        where = f"{spec.path}:{lineno}"
        if len(row) != len(header):
            raise DataError(f"{where}: expected {len(header)} fields like the header, found {len(row)}")
        text = row[text_at].strip()
        if not text:
            stats.blank += 1
            continue
        doc_id = _parse_id(row[id_at], where, spec.id_column) if id_at is not None else lineno
        skip = {text_at, id_at}
        metadata = {name: row[i] for i, name in enumerate(header) if i not in skip}
        yield Document(doc_id, text, metadata, numbered=id_at is None)


def _read_jsonl(spec: CorpusSpec, stats: CorpusStats) -> Iterator[Document]:
    for lineno, line in decoded_lines(spec.path):
        if not line.strip():
            stats.blank += 1
            continue
        where = f"{spec.path}:{lineno}"
        record = json_object(line, where)
        text = record.pop(spec.text_column, None)
        if not isinstance(text, str):
            problem = "missing" if text is None else f"not a string ({type(text).__name__})"
            raise DataError(f"{where}: field {spec.text_column!r} is {problem}")
        id_field = spec.id_column or "id"
        raw_id = record.pop(id_field, None)
        if raw_id is None and spec.id_column:
            raise DataError(f"{where}: field {id_field!r} is missing")
        if not text.strip():
            stats.blank += 1
            continue
        doc_id = lineno if raw_id is None else _parse_id(raw_id, where, id_field)
        yield Document(doc_id, text.strip(), record, numbered=raw_id is None)


def _read_parquet(spec: CorpusSpec, stats: CorpusStats) -> Iterator[Document]:
    """Rows of a Parquet file: ids are 1-based row numbers unless `id_column`; other columns are metadata."""
    import pyarrow.parquet as pq

    try:
        with open_binary(spec.path) as handle:
            table = pq.read_table(handle)
    except FileNotFoundError:
        raise UsageError(f"{spec.path}: no such file") from None
    except Exception as exc:  # pyarrow raises ArrowInvalid and friends for a damaged file
        raise DataError(f"{spec.path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    header = table.column_names
    _header_index(spec, header, spec.text_column, "--text-column")
    if spec.id_column:
        _header_index(spec, header, spec.id_column, "--id-column")
    for row_number, record in enumerate(table.to_pylist(), start=1):
        where = f"{spec.path}: row {row_number}"
        text = record.pop(spec.text_column)
        if text is not None and not isinstance(text, str):
            raise DataError(f"{where}: column {spec.text_column!r} is not a string ({type(text).__name__})")
        raw_id = record.pop(spec.id_column) if spec.id_column else row_number
        if not text or not text.strip():
            stats.blank += 1
            continue
        yield Document(_parse_id(raw_id, where, spec.id_column or "row"), text.strip(), record, numbered=not spec.id_column)


def read_corpus(spec: CorpusSpec, stats: CorpusStats | None = None) -> Iterator[Document]:
    """Stream the documents of a corpus in file order; `stats` (if given) counts as it goes."""
    stats = stats if stats is not None else CorpusStats()
    fmt = spec.resolved_format()
    if fmt not in FORMATS:
        raise UsageError(f"unknown corpus format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if fmt == "text":
        documents = _read_text(spec, stats)
    elif fmt == "jsonl":
        documents = _read_jsonl(spec, stats)
    elif fmt == "parquet":
        documents = _read_parquet(spec, stats)
    else:
        documents = _read_table(spec, stats, "\t" if fmt == "tsv" else ",")
    for doc in documents:
        stats.documents += 1
        yield doc


def scan_corpus(spec: CorpusSpec, renumbered: bool = False) -> CorpusStats:
    """Read the whole corpus once without keeping it: validates every line and counts.

    Run before any expensive work so a bad line fails in seconds, not after encoding.
    Duplicate ids (only possible with an id column or field) are an error. With
    `renumbered` (index add: documents without an id of their own get fresh ids),
    only the ids the file gives must be distinct; they are kept in `own_ids`.
    """
    stats = CorpusStats()
    seen: set[int] = set()
    ids_can_repeat = spec.id_column is not None or spec.resolved_format() == "jsonl"  # else ids are line/row numbers
    for doc in read_corpus(spec, stats):
        if renumbered and doc.numbered:
            stats.numbered += 1
        elif ids_can_repeat:  # a document with an id of its own always has one that can repeat
            if doc.id in seen:
                raise DataError(f"{spec.path}: id {doc.id} appears twice")
            seen.add(doc.id)
    if stats.documents == 0:
        raise DataError(f"{spec.path}: no documents to index ({stats.blank} blank lines)")
    if renumbered:
        stats.own_ids = sorted(seen)
    return stats
