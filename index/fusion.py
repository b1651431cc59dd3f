"""How a query retrieves: dense vectors, BM25 (the lexical index), or both fused by reciprocal rank or weighted scores.

`SearchOptions` is the one typed object the CLI (`--mode`, `--fusion`, `--rrf-k`, `--alpha`,
`--candidates`), the Python API (`simsearch.api.query(..., options=)`) and the server's
`/search` body share. Fusion works on the two ranked lists of one query:

- `rrf`: Σ 1 / (rrf_k + rank) over the lists a document is in (Cormack et al. 2009; k = 60 as
  Elasticsearch, OpenSearch and Qdrant use);
- `weighted`: alpha · dense' + (1 − alpha) · lexical', each side's scores min-max scaled to
  0…1 over its own candidates (0 where a side did not return the document).

The default mode, `auto`, is hybrid with weighted fusion at the index's own alpha where the
index has a lexical side, else dense. Which alpha serves an index depends on how well its
model reads its language: on the English STS-B set (the English default model) dense is the
stronger side and alpha 0.7 was best; on the Chinese set (the same model, weak on Chinese)
BM25 over CJK bigrams is, and 0.3 was best (docs/benchmarks.md). So an index's alpha is
interpolated between the two by the share of CJK characters in its texts (`auto_alpha`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from errors import UsageError

MODES = ("auto", "dense", "lexical", "hybrid")
FUSIONS = ("rrf", "weighted")
RRF_K = 60
MIN_CANDIDATES = 50
RERANK_TOP = 50  # first-stage hits a re-ranker re-orders by default
ALPHA_NO_CJK, ALPHA_ALL_CJK = 0.7, 0.3  # the best weighted alpha measured on the English and the Chinese STS-B sets


def auto_alpha(cjk_share: float) -> float:
    """The dense side's weight for an index whose texts are `cjk_share` CJK characters: between the two measured bests."""
    return round(ALPHA_NO_CJK + (ALPHA_ALL_CJK - ALPHA_NO_CJK) * min(max(cjk_share, 0.0), 1.0), 2)

Ranking = Sequence[tuple[int, float]]  # (id, score), best first


@dataclass(frozen=True)
class SearchOptions:
    """How to retrieve. None means the index's choice: `fusion` rrf (weighted under auto), `alpha` the index's
    `auto_alpha`, `candidates` max(50, k), how deep each side is read before fusing."""

    mode: str = "auto"
    fusion: str | None = None
    rrf_k: int = RRF_K
    alpha: float | None = None
    candidates: int | None = None
    rerank_top: int = RERANK_TOP  # with a re-ranker: how many first-stage hits it re-orders
    rerank_weight: float = 1.0  # the re-ranker's weight in the order of those hits (min-max blend with the first stage's scores; 1: its order alone)
    rescore: int | None = None  # dense side: candidates per hit re-scored by the index's float vectors (None: the index's own; 0: off)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.fusion is not None and self.fusion not in FUSIONS:
            raise UsageError(f"fusion {self.fusion!r} is not one of {', '.join(FUSIONS)}")
        if self.rrf_k < 1:
            raise UsageError(f"rrf_k must be at least 1, got {self.rrf_k}")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise UsageError(f"alpha {self.alpha} is outside [0, 1] (the dense side's weight)")
        if self.candidates is not None and self.candidates < 1:
            raise UsageError(f"candidates must be at least 1, got {self.candidates}")
        if self.rerank_top < 1:
            raise UsageError(f"rerank_top must be at least 1, got {self.rerank_top}")
        if self.rescore is not None and self.rescore < 0:
            raise UsageError(f"rescore must be at least 0 (0: off), got {self.rescore}")
        if not 0.0 <= self.rerank_weight <= 1.0:
            raise UsageError(f"rerank_weight {self.rerank_weight} is outside [0, 1] (the re-ranker's weight)")

    def resolved(self, has_lexical: bool, index_alpha: Callable[[], float]) -> SearchOptions:
        """These options made concrete for one index: auto becomes hybrid (weighted unless told) or, without a lexical side, dense; a missing alpha the index's."""
        mode, fusion = self.mode, self.fusion
        if mode == "auto":
            mode, fusion = ("hybrid", fusion or "weighted") if has_lexical else ("dense", fusion)
        fusion = fusion or "rrf"
        alpha = self.alpha if self.alpha is not None or mode != "hybrid" or fusion != "weighted" else index_alpha()
        return replace(self, mode=mode, fusion=fusion, alpha=alpha)

    def rerank_depth(self, k: int) -> int:
        """How many first-stage hits a re-ranked top k needs: k, or rerank_top when that is deeper."""
        return max(k, self.rerank_top)

    def depth(self, k: int) -> int:
        """How many hits each side returns for top-k: k alone, or the candidates when two sides are fused."""
        return max(self.candidates or MIN_CANDIDATES, k) if self.mode == "hybrid" else k

    def label(self) -> str:
        """dense, lexical, hybrid-rrf or hybrid-weighted-0.3: how a result was retrieved, for tables and records."""
        if self.mode != "hybrid":
            return self.mode
        return f"hybrid-weighted-{self.alpha:g}" if self.fusion == "weighted" else "hybrid-rrf"

    def rerank_label(self) -> str:
        """+rerank@50, or +rerank@50-w0.5 when blended with the first stage: how a re-ranked result was ordered."""
        return f"+rerank@{self.rerank_top}" + (f"-w{self.rerank_weight:g}" if self.rerank_weight < 1.0 else "")


@dataclass(frozen=True)
class Fused:
    """One document of a fused ranking: its fused score and its 1-based rank on each side (None where that side did not return it)."""

    id: int
    score: float
    dense_rank: int | None
    lexical_rank: int | None


def reciprocal_rank(dense: Ranking, lexical: Ranking, rrf_k: int = RRF_K) -> dict[int, float]:
    """{id: Σ 1 / (rrf_k + rank)} over the lists a document is in."""
    fused: dict[int, float] = {}
    for ranking in (dense, lexical):
        for rank, (doc_id, _) in enumerate(ranking, start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + 1.0 / (rrf_k + rank)
    return fused


def weighted_scores(dense: Ranking, lexical: Ranking, alpha: float) -> dict[int, float]:
    """{id: alpha · dense' + (1 − alpha) · lexical'}, each side min-max scaled over its own list (a lone or tied score scales to 1)."""
    fused: dict[int, float] = {}
    for ranking, weight in ((dense, alpha), (lexical, 1.0 - alpha)):
        if not ranking:
            continue
        scores = [score for _, score in ranking]
        low, span = min(scores), max(scores) - min(scores)
        for doc_id, score in ranking:
            fused[doc_id] = fused.get(doc_id, 0.0) + weight * ((score - low) / span if span > 0 else 1.0)
    return fused


def fuse(dense: Ranking, lexical: Ranking, options: SearchOptions, k: int) -> list[Fused]:
    """The top k of the two rankings fused as `options` says; ties broken by id, so a fusion is deterministic."""
    if options.fusion == "weighted":
        assert options.alpha is not None, "fuse takes options resolved for an index (SearchOptions.resolved)"
        scores = weighted_scores(dense, lexical, options.alpha)
    else:
        scores = reciprocal_rank(dense, lexical, options.rrf_k)
    dense_rank = {doc_id: rank for rank, (doc_id, _) in enumerate(dense, start=1)}
    lexical_rank = {doc_id: rank for rank, (doc_id, _) in enumerate(lexical, start=1)}
    best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [Fused(doc_id, score, dense_rank.get(doc_id), lexical_rank.get(doc_id)) for doc_id, score in best]


def ranked(ranking: Ranking, side: str) -> list[Fused]:
    """One side's ranking in the fused shape (its own score; the other side's rank None)."""
    return [Fused(doc_id, score, rank if side == "dense" else None, rank if side == "lexical" else None) for rank, (doc_id, score) in enumerate(ranking, start=1)]
