"""Load an index folder and answer queries: text or vectors in, ranked hits out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import read_consistently
from common.encoder import Encoder
from common.reranker import Reranker
from errors import DataError, UsageError
from index.fusion import SearchOptions, auto_alpha, fuse, ranked, weighted_scores
from index.gpu import attach_searcher
from index import lexical
from index.integrity import check_sizes
from index.manifest import Manifest
from index.shards import ShardedVectors
from index.store import STORE_NAME, DocStore
from index.vectors import VECTORS_NAME, VectorIndex

# Metadata filter: field → required value (several are ANDed).
Where = dict[str, str]
# (version folder, manifest) → an object with VectorIndex's search face (`dim`, `live_count`, `search`, `floats_description`, `device`)
# that holds the vectors elsewhere: `simsearch serve --engine ray` passes one that deploys each shard on Ray Serve.
VectorOpener = Callable[[Path, Manifest], Any]
ALPHA_SAMPLE = 1_000  # the first documents whose CJK share sets an index's auto alpha


def unknown_fields(where: Where | None, fields: Sequence[str], index: str) -> str | None:
    """The one message for a filter naming fields no document of `index` has (the CLI and the server both say it), or None."""
    unknown = sorted(set(where or {}) - set(fields))
    if not unknown:
        return None
    return f"unknown field(s) {', '.join(unknown)} for index {index!r} (its metadata fields: {', '.join(sorted(fields)) or 'none'})"


@dataclass(frozen=True)
class Hit:
    """One search result: document id, score (cosine; BM25 or fused for lexical and hybrid searches), text and metadata.

    `ranks` ({"dense_rank", "lexical_rank"}, None where a side did not return the document) is set by lexical and hybrid searches;
    `rerank_score` by a re-ranked search (a cross-encoder's score of the query and this text; `score` stays the first stage's).
    """

    id: int
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    ranks: dict[str, int | None] | None = None
    rerank_score: float | None = None

    def to_json(self) -> dict[str, Any]:
        """`{"id", "score", "text", ...metadata}` (+ `dense_rank`, `lexical_rank`, `rerank_score` when set): what `simsearch query --json` prints."""
        reranked = {} if self.rerank_score is None else {"rerank_score": self.rerank_score}
        return {**self.metadata, "id": self.id, "score": self.score, "text": self.text, **(self.ranks or {}), **reranked}


def rerank_pairs(queries: Sequence[str], rows: Sequence[Sequence[Hit]], top: int) -> list[tuple[str, str]]:
    """The (query, text) pairs of each query's first `top` hits, query by query: what the cross-encoder scores."""
    return [(query, hit.text) for query, row in zip(queries, rows) for hit in row[:top]]


def reorder(rows: Sequence[Sequence[Hit]], scores: Sequence[float], top: int, weight: float = 1.0, k: int | None = None) -> list[list[Hit]]:
    """Each query's first `top` hits re-sorted by their re-ranker scores (in `rerank_pairs`' order), or with `weight` < 1 by
    weight · score' + (1 − weight) · first-stage score' (each min-max scaled over those hits, as weighted fusion does);
    ties keep their first-stage order; then the rest as they were; each row cut to `k` when given."""
    reranked, start = [], 0
    for row in rows:
        head = list(row[:top])
        mine, start = [float(s) for s in scores[start : start + len(head)]], start + len(head)
        blended = weighted_scores(list(enumerate(mine)), [(i, hit.score) for i, hit in enumerate(head)], weight)
        order = sorted(range(len(head)), key=lambda i: -blended[i])
        reranked.append(([replace(head[i], rerank_score=mine[i]) for i in order] + list(row[top:]))[:k])
    return reranked


def rerank(
    queries: Sequence[str], rows: Sequence[Sequence[Hit]], reranker: Reranker, top: int, batch_size: int = 32, weight: float = 1.0, k: int | None = None,
) -> list[list[Hit]]:
    """Each query's first `top` hits re-scored by the cross-encoder and re-sorted (`reorder`, cut to `k`); the pairs of every
    query go to it in one call (it sorts them by length: less padding)."""
    return reorder(rows, reranker.score_pairs(rerank_pairs(queries, rows, top), batch_size), top, weight, k)


class SearchIndex:
    """A loaded index folder; text queries need the `encoder` it was given (vector queries do not)."""

    def __init__(
        self, path: Path, manifest: Manifest, vectors: VectorIndex | ShardedVectors, store: DocStore, encoder: Encoder | None = None, device: str = "CPU"
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.vectors = vectors
        self.store = store
        self.device = device  # where unfiltered searches run, in words
        self._encoder = encoder
        self._alpha: float | None = None

    @property
    def encoder(self) -> Encoder:
        """The encoder that embeds text queries; index/ never loads one itself."""
        if self._encoder is None:
            raise UsageError(f"{self.path}: loaded without an encoder; pass encoder= to load_index (or search with vectors)")
        return self._encoder

    def resolve(self, options: SearchOptions) -> SearchOptions:
        """`options` made concrete for this index: auto is hybrid at this index's alpha, or dense where it has no lexical side."""
        return options.resolved(self.store.has_lexical, self.auto_alpha)

    def auto_alpha(self) -> float:
        """The dense side's weight that auto gives this index, from the CJK share of its first 1,000 texts (read once)."""
        if self._alpha is None:
            _, texts = next(self.store.iter_texts(ALPHA_SAMPLE), ([], []))
            self._alpha = auto_alpha(lexical.cjk_share(texts))
        return self._alpha

    def allowed_ids(self, where: Where | None) -> np.ndarray | None:
        """Ids whose metadata matches every field=value of `where` (None: no filter)."""
        if not where:
            return None
        return np.array(sorted(self.store.ids_where(where)), dtype=np.int64)

    def search_ids(self, queries: np.ndarray, k: int = 10, where: Where | None = None, rescore: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Batch search without texts: (scores, ids) arrays of shape (n, k'); ids -1 where fewer hits exist.

        A `where` filter runs on the CPU index with a FAISS ID selector (GPU copies cannot filter); `rescore`
        (0: off) overrides the index's float rescoring multiplier.
        """
        if k < 1:
            raise UsageError(f"k must be at least 1, got {k}")
        self.check_rescore(rescore)
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.manifest.embedding_dim)
        allowed = self.allowed_ids(where)
        if allowed is not None and not len(allowed):
            return np.zeros((len(queries), 0), dtype=np.float32), np.zeros((len(queries), 0), dtype=np.int64)
        k = min(k, max(self.vectors.live_count if allowed is None else len(allowed), 1))
        return self.vectors.search(queries, k, allowed, rescore)

    def check_rescore(self, rescore: int | None) -> None:
        """Rescoring needs the float vectors: an index built without them gets a one-line error saying how to keep them."""
        if rescore and not self.vectors.floats_description():
            raise UsageError(f"{self.path}: rescore {rescore}: this index keeps no float vectors to rescore with; build it with --rescore M")

    def search_vectors(self, queries: np.ndarray, k: int = 10, where: Where | None = None, rescore: int | None = None) -> list[list[Hit]]:
        """Top-k hits for each row of `queries` (already embedded with this index's model)."""
        scores, ids = self.search_ids(queries, k, where, rescore)
        docs = self.store.get([i for i in np.unique(ids).tolist() if i >= 0])
        return [
            [Hit(i, s, *docs[i]) for s, i in zip(row_scores, row_ids) if i >= 0 and i in docs]
            for row_scores, row_ids in zip(scores.tolist(), ids.tolist())
        ]

    def search(
        self, queries: Sequence[str], k: int = 10, batch_size: int = 64, where: Where | None = None, options: SearchOptions = SearchOptions(),
        reranker: Reranker | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits for each query text: dense, lexical (BM25) or both fused, as `options` says (by default as suits this index),
        then, with a `reranker`, the first `options.rerank_top` re-ordered by it."""
        options = self.resolve(options)
        vectors = None if options.mode == "lexical" else self.encoder.encode(queries, batch_size)
        if reranker is None:
            return self.search_embedded(queries, vectors, k, where, options)
        hits = self.search_embedded(queries, vectors, options.rerank_depth(k), where, options)
        return rerank(queries, hits, reranker, options.rerank_top, weight=options.rerank_weight, k=k)

    def search_embedded(
        self, queries: Sequence[str], vectors: np.ndarray | None, k: int, where: Where | None = None, options: SearchOptions = SearchOptions()
    ) -> list[list[Hit]]:
        """The first stage of `search` for query texts already embedded (`vectors`; unused by lexical search): the server's batches."""
        return self._first_stage(queries, vectors, k, where, self.resolve(options))

    def _first_stage(self, queries: Sequence[str], vectors: np.ndarray | None, k: int, where: Where | None, options: SearchOptions) -> list[list[Hit]]:
        """The top k of the dense, lexical or fused ranking (`options` resolved for this index)."""
        if options.mode == "dense":
            return self.search_vectors(vectors, k, where, options.rescore)
        if k < 1:
            raise UsageError(f"k must be at least 1, got {k}")
        self.check_lexical()
        depth = options.depth(k)
        lexical_hits = [self.store.lexical_search(query, depth, where) for query in queries]
        if options.mode == "lexical":
            rankings = [ranked(found, "lexical") for found in lexical_hits]
        else:
            scores, ids = self.search_ids(vectors, depth, where, options.rescore)
            dense = [[(i, s) for s, i in zip(row_s, row_i) if i >= 0] for row_s, row_i in zip(scores.tolist(), ids.tolist())]
            rankings = [fuse(d, found, options, k) for d, found in zip(dense, lexical_hits)]
        docs = self.store.get([f.id for ranking in rankings for f in ranking])
        return [
            [Hit(f.id, f.score, *docs[f.id], ranks={"dense_rank": f.dense_rank, "lexical_rank": f.lexical_rank}) for f in ranking if f.id in docs]
            for ranking in rankings
        ]

    def check_lexical(self) -> None:
        """Lexical and hybrid search need the lexical index: a folder from an older simsearch gets a one-line error naming the command that adds it."""
        if not self.store.has_lexical:
            raise UsageError(f"{self.path}: this index {lexical.missing(self.path)}")


def fingerprint_scheme(fingerprint: str) -> str:
    """How a model fingerprint was taken: its prefix (`v2`); "" for an older simsearch's, checked by simsearch.api.index_encoder."""
    return fingerprint.split(":", 1)[0] if ":" in fingerprint else ""


def check_encoder(path: Path, manifest: Manifest, encoder: Encoder) -> None:
    """Refuse an encoder whose vectors cannot be compared with the index's: another dimension, or the same model changed on disk.

    The fingerprint is compared only when the encoder claims to be the index's own
    model: `query --model OTHER` of the same dimension is a deliberate choice.
    """
    if encoder.dim != manifest.embedding_dim:
        raise UsageError(
            f"{path}: the index holds {manifest.embedding_dim}-dim vectors ({manifest.model}) but the encoder {encoder.name} gives {encoder.dim}; "
            "query with the model the index was built with"
        )
    current, recorded = encoder.describe().get("fingerprint"), manifest.model_fingerprint
    if recorded and current and encoder.name == manifest.model and fingerprint_scheme(current) == fingerprint_scheme(recorded) and current != recorded:
        raise UsageError(
            f"{path}: the model {manifest.model} changed since the index was built (fingerprint {current[:12]}, "
            f"manifest {manifest.model_fingerprint[:12]}); restore that model or rebuild the index"
        )


def load_index(path: Path | str, encoder: Encoder | None = None, mmap: bool = False, gpu: str = "auto", open_vectors: VectorOpener | None = None) -> SearchIndex:
    """Open an index folder written by `build_index`; `encoder` embeds text queries (its dimension must match).

    `mmap` maps the vectors from disk (read-only) instead of reading them into memory;
    `gpu` (auto, off, one, all) puts a search copy on the GPU when one is usable (see index.gpu);
    `open_vectors` holds the vectors somewhere else instead (texts and metadata are still read here).
    The folder's link is resolved once, so a writer swapping in a new version
    meanwhile gives this reader the old or the new version whole (see common.atomic).
    """
    path = Path(path)
    return read_consistently(path, lambda version: _load(path, version, encoder, mmap, gpu, open_vectors))


def _load(path: Path, version: Path, encoder: Encoder | None, mmap: bool, gpu: str, open_vectors: VectorOpener | None) -> SearchIndex:
    manifest = Manifest.read(version)
    names = [f"{entry['path']}/{VECTORS_NAME}" for entry in manifest.shards] or [VECTORS_NAME]
    for name in (*names, STORE_NAME):
        if not (version / name).is_file():
            raise DataError(f"{path}: index is incomplete (no {name})")
    check_sizes(version, manifest.files)
    if encoder is not None:
        check_encoder(path, manifest, encoder)
    store = DocStore.open(version / STORE_NAME)  # checked before the vectors: `open_vectors` may deploy them elsewhere (seconds)
    try:
        vectors, device = _open_vectors(path, version, manifest, mmap, gpu, open_vectors)
    except BaseException:
        store.close()
        raise
    return SearchIndex(path, manifest, vectors, store, encoder, device)


def _open_vectors(path: Path, version: Path, manifest: Manifest, mmap: bool, gpu: str, open_vectors: VectorOpener | None) -> tuple[Any, str]:
    """The vectors of one index version and where they search: read here (checked against the manifest's dimension), or by `open_vectors`."""
    if open_vectors is not None:
        vectors = open_vectors(version, manifest)
        return vectors, vectors.device
    if manifest.shards:
        vectors = ShardedVectors.read(version, manifest.shards, manifest.index_type, manifest.search_params, mmap=mmap, floats=manifest.floats)
    else:
        vectors = VectorIndex.read(version, manifest.index_type, manifest.search_params, mmap=mmap, floats=manifest.floats)
    if vectors.dim != manifest.embedding_dim:
        raise DataError(f"{path}: vectors have dim {vectors.dim} but the manifest says {manifest.embedding_dim}")
    return vectors, ", ".join(sorted({attach_searcher(shard, gpu) for shard in getattr(vectors, "shards", [vectors])}))
