"""Retrieval quality of an index on judged queries: Recall@k, MRR@10, nDCG@10, MAP@100 (trec_eval via pytrec_eval)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytrec_eval

from common.reranker import Reranker
from errors import DataError
from index.fusion import SearchOptions
from index.search import SearchIndex

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True)
class RetrievalResult:
    """Metric name ('recall@10', 'mrr@10', ...) → mean over the `queries` judged queries."""

    metrics: dict[str, float]
    queries: int
    model: str = ""  # the index's model, for the record
    unknown_docs: int = 0  # judged document ids that are not in the index (they can only count as misses)
    mode: str = "dense"  # how it retrieved: SearchOptions.label() as resolved for the index


def _top(run: Run, depth: int) -> Run:
    return {q: dict(sorted(docs.items(), key=lambda item: -item[1])[:depth]) for q, docs in run.items()}


def score_run(run: Run, qrels: Qrels, ks: Sequence[int] = (1, 5, 10, 100)) -> RetrievalResult:
    """Mean metrics of a ranked run over the queries that have judgements; computed by trec_eval."""
    judged = {q: qrels[q] for q in run if q in qrels}
    if not judged:
        raise DataError("no query of the run has relevance judgements (do the query ids match the qrels?)")
    run = {q: run[q] for q in judged}
    full = pytrec_eval.RelevanceEvaluator(judged, {"recall." + ",".join(map(str, ks)), "ndcg_cut.10", "map_cut.100"}).evaluate(run)
    # trec_eval's recip_rank has no cut-off: MRR@10 is recip_rank over the top 10 only.
    first10 = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(_top(run, 10))
    names = {f"recall_{k}": f"recall@{k}" for k in ks} | {"ndcg_cut_10": "ndcg@10", "map_cut_100": "map@100"}
    # A query with no hits at all is absent from trec_eval's answer: it scores 0.
    metrics = {label: sum(full.get(q, {}).get(m, 0.0) for q in judged) / len(judged) for m, label in names.items()}
    metrics["mrr@10"] = sum(first10.get(q, {}).get("recip_rank", 0.0) for q in judged) / len(judged)
    return RetrievalResult(metrics, len(judged))


def evaluate_retrieval(
    index: SearchIndex, queries: dict[str, str], qrels: Qrels, ks: Sequence[int] = (1, 5, 10, 100), batch_size: int = 64,
    options: SearchOptions = SearchOptions(), reranker: Reranker | None = None,
) -> RetrievalResult:
    """Search every judged query in `index` (depth max(ks, 100); auto, dense, lexical or hybrid as `options` says; then
    re-ranked by `reranker` when given) and score the ranking."""
    options = index.resolve(options)
    judged = [q for q in queries if q in qrels]
    if not judged:
        raise DataError("no query id of the queries file appears in the qrels")
    depth = max(*ks, 100)
    found = index.search([queries[q] for q in judged], depth, batch_size, options=options, reranker=reranker)
    if reranker is None:
        run = {q: {str(hit.id): hit.score for hit in hits} for q, hits in zip(judged, found)}
    else:  # re-ranked hits are in their final order, which scores of two kinds cannot give trec_eval: their ranks do
        run = {q: {str(hit.id): float(len(hits) - rank) for rank, hit in enumerate(hits)} for q, hits in zip(judged, found)}
    result = score_run(run, qrels, ks)
    judged_docs = {d for q in judged for d in qrels[q]}
    numeric = [int(d) for d in judged_docs if d.isdigit() and int(d) < 2**63]
    unknown = len(judged_docs) - len(index.store.existing(numeric))
    mode = options.label() + (options.rerank_label() if reranker is not None else "")
    return RetrievalResult(result.metrics, result.queries, index.manifest.model, unknown, mode)
