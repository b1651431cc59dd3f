"""STS evaluation: how well a model's pair scores (cosine of embeddings, or a cross-encoder's score) rank pairs like human scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.encoder import Encoder
from common.measures import StsResult, pair_cosines, sts_correlations
from common.reranker import Reranker
from common.sts_data import StsData
from errors import DataError


@dataclass(frozen=True)
class StsRun:
    """One data set scored by one encoder: the predictions are kept for plots."""

    data: StsData
    predicted: np.ndarray
    result: StsResult


@dataclass(frozen=True)
class StsReport:
    """`eval sts` over several sets: one run per set, and their unweighted mean when there are several."""

    model: str
    runs: list[StsRun]
    mean: StsResult | None
    kind: str = "bi-encoder"  # or "cross-encoder": cosines of two vectors, or one score per pair read together

    def rows(self) -> list[tuple[str, StsResult]]:
        """(label, result) per set, then ("mean", ...) when there are several sets."""
        rows = [(run.data.name, run.result) for run in self.runs]
        return rows + ([("mean", self.mean)] if self.mean is not None else [])


def cosine_scores(encoder: Encoder, data: StsData, batch_size: int = 64) -> np.ndarray:
    """Cosine similarity of each pair; every distinct sentence is encoded once."""
    unique, first, second = data.distinct()
    return pair_cosines(encoder.encode(unique, batch_size), first, second)


def pair_scores(model: Encoder | Reranker, data: StsData, batch_size: int = 64) -> np.ndarray:
    """Each pair's predicted similarity: the cosine of its sentences' vectors, or a cross-encoder's score of the pair."""
    if isinstance(model, Reranker):
        return model.score_pairs(list(zip(data.sentences1, data.sentences2)), batch_size)
    return cosine_scores(model, data, batch_size)


def run_sts(model: Encoder | Reranker, data: StsData, batch_size: int = 64) -> StsRun:
    """Score `data` with `model` (an encoder or a cross-encoder), keeping the predictions."""
    predicted = pair_scores(model, data, batch_size)
    try:
        return StsRun(data, predicted, sts_correlations(predicted, data.scores))
    except DataError as exc:
        raise DataError(f"{data.path or data.name}: {exc}") from None


def evaluate_sts(encoder: Encoder, data: StsData, batch_size: int = 64) -> StsResult:
    """Spearman and Pearson correlation of cosine similarity against the gold scores."""
    return run_sts(encoder, data, batch_size).result


def mean_result(results: Sequence[StsResult]) -> StsResult:
    """Unweighted mean of the correlations over data sets; `n` is the total pair count."""
    return StsResult(
        float(np.mean([r.spearman for r in results])), float(np.mean([r.pearson for r in results])), sum(r.n for r in results)
    )


def sts_report(model: Encoder | Reranker, sets: Sequence[StsData], batch_size: int = 64) -> StsReport:
    """Score every set with one encoder or cross-encoder; a mean row when there are several."""
    runs = [run_sts(model, data, batch_size) for data in sets]
    kind = "cross-encoder" if isinstance(model, Reranker) else "bi-encoder"
    return StsReport(model.name, runs, mean_result([r.result for r in runs]) if len(runs) > 1 else None, kind)
