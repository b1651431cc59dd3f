"""`manifest.json`: what an index folder holds, so it can be loaded and explained without guessing."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from common.corpus import json_object
from errors import DataError
from index.lexical import ADD_COMMAND as LEXICAL_ADD_COMMAND, VERSION as LEXICAL_VERSION

# 2: index types (IVF ids live in the inverted lists), tuned search parameters, quality, HNSW tombstones.
# 3: a sharded folder (`shards` lists sub-folders holding vectors.faiss; one docs.sqlite beside them); unsharded folders stay 2.
FORMAT_VERSION = 2
SHARDED_FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # a version-1 folder is a flat index with the same files
MANIFEST_NAME = "manifest.json"


def simsearch_version() -> str:
    """Installed simsearch version, or 'unknown' when run from a source tree."""
    try:
        return metadata.version("simsearch")
    except metadata.PackageNotFoundError:
        return "unknown"


def inside(name: Any) -> bool:
    """Whether a name a manifest gives is a plain relative path inside the index folder (no `..`, not absolute, no NUL)."""
    if not isinstance(name, str) or not name or "\0" in name or name.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


@dataclass
class Manifest:
    """Self-description of an index folder (written last, read first)."""

    model: str
    embedding_dim: int
    document_count: int
    metric: str = "inner_product"
    normalized: bool = True
    index_type: str = "flat"
    faiss_factory: str = "IDMap2,Flat"
    reduction: dict[str, Any] | None = None
    backend: str = "torch"  # the encoder backend that made the vectors (query uses the same one by default)
    index_params: dict[str, Any] = field(default_factory=dict)  # build parameters (nlist, m, nbits, M, efConstruction)
    search_params: dict[str, int] = field(default_factory=dict)  # tuned nprobe / efSearch, applied on load
    choice: dict[str, Any] = field(default_factory=dict)  # requested type, memory budget, target recall, reasons
    quality: dict[str, Any] = field(default_factory=dict)  # recall@10 and QPS measured on held-out queries at build
    vector_count: int | None = None  # stored vectors, HNSW tombstones included
    source: dict[str, Any] = field(default_factory=dict)
    model_fingerprint: str | None = None  # of the model folder's weights and config (embedder.model_files.model_fingerprint)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # file name → {"bytes", "sha256"} (index.integrity)
    shards: list[dict[str, Any]] = field(default_factory=list)  # [{"path", "documents", "bytes"}] of a sharded folder; empty: one vectors.faiss
    lexical: dict[str, Any] = field(default_factory=dict)  # the BM25 index in docs.sqlite (index.lexical.DESCRIPTION); empty: none (older folders)
    engine: dict[str, Any] = field(default_factory=dict)  # how it was built: {"name": "ray", "workers", "docs_per_second", ...}
    floats: dict[str, Any] = field(default_factory=dict)  # float vectors kept for rescoring: {"file", "generation", "rows"} (index.rescore); empty: none
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    simsearch_version: str = field(default_factory=simsearch_version)
    format_version: int = FORMAT_VERSION

    def write(self, folder: Path) -> None:
        """Record the checksums of the folder's other files, then write the manifest (last, so it describes what is there)."""
        from index.integrity import file_digests

        self.files = file_digests(folder)
        (folder / MANIFEST_NAME).write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST_NAME
        if not folder.is_dir():
            raise DataError(f"{folder}: no such index folder")
        if not path.is_file():
            raise DataError(f"{folder}: not a simsearch index (no {MANIFEST_NAME})")
        try:
            raw = json_object(path.read_text(encoding="utf-8"), str(path))
        except UnicodeDecodeError:
            raise DataError(f"{path}: not valid UTF-8") from None
        version = raw.get("format_version")
        if version not in READABLE_VERSIONS:
            raise DataError(f"{path}: format_version {version!r} is not supported (this simsearch reads {', '.join(map(str, READABLE_VERSIONS))})")
        known = {f.name for f in fields(cls)}
        missing = {"model", "embedding_dim", "document_count"} - raw.keys()
        if missing:
            raise DataError(f"{path}: missing field(s) {', '.join(sorted(missing))}")
        manifest = cls(**{k: v for k, v in raw.items() if k in known})
        manifest.validate(path)
        return manifest

    def validate(self, path: Path) -> None:
        """Refuse a manifest whose values cannot be used (hand-edited or damaged), naming the field."""
        from index.plan import INDEX_TYPES

        def bad(name: str, value: Any, expected: str) -> DataError:
            return DataError(f"{path}: field {name!r} is {value!r}, expected {expected}")

        def whole(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        for name in ("embedding_dim", "document_count"):
            value = getattr(self, name)
            if not whole(value) or value < (1 if name == "embedding_dim" else 0):
                raise bad(name, value, "a positive whole number" if name == "embedding_dim" else "a whole number >= 0")
        if not isinstance(self.model, str) or not self.model:
            raise bad("model", self.model, "a model name")
        if self.index_type not in INDEX_TYPES[:-1]:
            raise bad("index_type", self.index_type, f"one of {', '.join(INDEX_TYPES[:-1])}")
        for name in ("index_params", "search_params", "choice", "quality", "source", "files", "lexical", "floats"):
            if not isinstance(getattr(self, name), dict):
                raise bad(name, getattr(self, name), "an object")
        for key, value in self.search_params.items():
            if not whole(value) or value < 1:
                raise bad(f"search_params.{key}", value, "a positive whole number")
        if self.floats and not (isinstance(self.floats.get("generation"), str) and re.fullmatch(r"[0-9a-f]{32}", self.floats["generation"])):
            raise bad("floats.generation", self.floats.get("generation"), "32 hexadecimal digits")
        if self.vector_count is not None and (not whole(self.vector_count) or self.vector_count < 0):
            raise bad("vector_count", self.vector_count, "a whole number >= 0")
        if self.lexical and self.lexical.get("version") != LEXICAL_VERSION:
            raise bad("lexical.version", self.lexical.get("version"), f"{LEXICAL_VERSION} (rebuild the index with this simsearch)")
        if self.quality:
            for key in ("recall_at_10", "qps", "queries", "target_recall"):
                value = self.quality.get(key)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                    raise bad(f"quality.{key}", value, "a number")
            tried = self.quality.get("tried", [])
            if not isinstance(tried, list) or not all(isinstance(t, list) and len(t) == 2 and all(isinstance(v, (int, float)) for v in t) for t in tried):
                raise bad("quality.tried", tried, "a list of [value, recall] pairs")
            if not isinstance(self.quality.get("reached"), bool) or not isinstance(self.quality.get("search_params"), dict):
                raise bad("quality", self.quality, "reached (true/false) and search_params (an object)")
        for name, record in self.files.items():
            if not inside(name):
                raise bad(f"files.{name}", name, "a file inside the index folder")
            if not isinstance(record, dict) or not whole(record.get("bytes")) or not isinstance(record.get("sha256"), str):
                raise bad(f"files.{name}", record, '{"bytes": N, "sha256": "..."}')
        if not isinstance(self.shards, list):
            raise bad("shards", self.shards, "a list")
        for number, shard in enumerate(self.shards):
            if not isinstance(shard, dict) or not inside(shard.get("path")) or "/" in shard["path"]:
                raise bad(f"shards[{number}].path", shard.get("path") if isinstance(shard, dict) else shard, "a folder name inside the index folder")
            for key in ("documents", "bytes"):
                if not whole(shard.get(key)) or shard[key] < 0:
                    raise bad(f"shards[{number}].{key}", shard.get(key), "a whole number >= 0")

    def memory(self) -> dict[str, Any]:
        """Bytes per stored vector held in RAM once loaded (FAISS codes, ids and their hash map) and on disk (the floats for rescoring too, memory-mapped)."""
        from index.plan import ID_BYTES

        sizes = dict.fromkeys(("vectors.faiss", "floats.bin", "tombstones.npy"), 0)  # summed over shards
        for name, record in self.files.items():
            base = name.rsplit("/", 1)[-1]
            if base in sizes:
                sizes[base] += record["bytes"]
        count = max(self.vector_count if self.vector_count is not None else self.document_count, 1)
        ram = sizes["vectors.faiss"] + sizes["tombstones.npy"] + (ID_BYTES.get(self.index_type, 8) - 8) * count  # the file holds 8 bytes of id
        disk = sum(sizes.values())
        return {"ram_bytes_per_vector": round(ram / count, 1), "disk_bytes_per_vector": round(disk / count, 1), "float32_bytes_per_vector": 4 * self.embedding_dim}

    def explain(self) -> str:
        """Why this index: type, factory, parameters, reasons, and the recall@10/QPS measured at build time."""
        from index.plan import format_bytes

        lines = [f"index: {self.index_type} ({self.faiss_factory})" + (f", params {self.index_params}" if self.index_params else "")]
        choice = self.choice
        if choice:
            asked = f"asked for {choice['requested']}"
            if choice["requested"] == "auto":
                asked += f" with --max-memory {format_bytes(choice['max_memory'])} and --target-recall {choice['target_recall']}"
            lines.append(f"why: {asked}" + "".join(f"\n  - {r}" for r in choice.get("reasons", []) if not r.startswith("--type")))
            lines.append(f"built on: {choice.get('device', 'CPU')} in {choice.get('build_seconds', '?')} s")
            if choice.get("selection"):
                from index.selection import candidate_table

                lines += candidate_table(choice["selection"], self.faiss_factory)
        if self.engine:
            lines.append("engine: " + ", ".join(f"{k} {v}" for k, v in self.engine.items()))
        if self.shards:
            lines.append(f"shards: {len(self.shards)}, searched together (top-k merged by score): "
                         + ", ".join(f"{s['path']} {s['documents']} docs {format_bytes(s['bytes'])}" for s in self.shards))
        if self.files:
            memory = self.memory()
            floats = f", float vectors on disk memory-mapped for rescoring k x {self.search_params.get('rescore')}" if self.floats else ""
            lines.append(f"memory: {memory['ram_bytes_per_vector']:.0f} bytes per vector in RAM, {memory['disk_bytes_per_vector']:.0f} on disk{floats} "
                         f"(float32 alone: {memory['float32_bytes_per_vector']})")
        if self.lexical:
            lines.append(f"lexical: BM25 over SQLite FTS5 in docs.sqlite (tokenize '{self.lexical.get('tokenize')}', CJK {self.lexical.get('cjk')})")
        else:
            lines.append(f"lexical: none (built by an older simsearch); `{LEXICAL_ADD_COMMAND} FOLDER` adds one for --mode lexical/hybrid")
        quality = self.quality
        if quality:
            tuned = ", ".join(f"{k}={v}" for k, v in quality["search_params"].items()) or "nothing to tune"
            tried = ", ".join(f"{p}→{r:.3f}" for p, r in quality.get("tried", []))
            reached = "reached" if quality["reached"] else "NOT reached (best kept)"
            lines.append(f"search: {tuned}" + (f" (tried {tried})" if tried else ""))
            lines.append(
                f"measured on {quality['queries']} held-out corpus vectors: recall@10 {quality['recall_at_10']:.3f} vs exact "
                f"(target {quality['target_recall']}: {reached}), {quality['qps']:.0f} queries/s in one batch"
            )
        return "\n".join(lines)
