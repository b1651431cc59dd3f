"""STS evaluation: how well cosine similarity of embeddings ranks pairs like human scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.encoder import Encoder
from common.measures import StsResult, pair_cosines, sts_correlations
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

    def rows(self) -> list[tuple[str, StsResult]]:
        """(label, result) per set, then ("mean", ...) when there are several sets."""
        rows = [(run.data.name, run.result) for run in self.runs]
        return rows + ([("mean", self.mean)] if self.mean is not None else [])


def cosine_scores(encoder: Encoder, data: StsData, batch_size: int = 64) -> np.ndarray:
    """Cosine similarity of each pair; every distinct sentence is encoded once."""
    unique, first, second = data.distinct()
    return pair_cosines(encoder.encode(unique, batch_size), first, second)


def run_sts(encoder: Encoder, data: StsData, batch_size: int = 64) -> StsRun:
    """Score `data` with `encoder`, keeping the predictions."""
    predicted = cosine_scores(encoder, data, batch_size)
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


def sts_report(encoder: Encoder, sets: Sequence[StsData], batch_size: int = 64) -> StsReport:
    """Score every set with one encoder; a mean row when there are several."""
    runs = [run_sts(encoder, data, batch_size) for data in sets]
    return StsReport(encoder.name, runs, mean_result([r.result for r in runs]) if len(runs) > 1 else None)
