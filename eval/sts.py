"""STS evaluation: how well cosine similarity of embeddings ranks pairs like human scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sentence_transformers import SentenceTransformer

from embedder import encode
from common.sts_data import StsData


@dataclass(frozen=True)
class StsResult:
    """Correlations in [-1, 1] between cosine similarity and gold scores over `n` pairs."""

    spearman: float
    pearson: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class StsRun:
    """One data set scored by one model: the predictions are kept for plots."""

    data: StsData
    predicted: np.ndarray
    result: StsResult


def cosine_scores(model: SentenceTransformer, data: StsData, batch_size: int = 64) -> np.ndarray:
    """Cosine similarity of each pair; every distinct sentence is encoded once."""
    unique = list(dict.fromkeys(data.sentences1 + data.sentences2))
    position = {s: i for i, s in enumerate(unique)}
    vectors = encode(model, unique, batch_size, normalize=True)
    a = vectors[[position[s] for s in data.sentences1]]
    b = vectors[[position[s] for s in data.sentences2]]
    return np.einsum("ij,ij->i", a, b, dtype=np.float64)


def correlations(predicted: np.ndarray, gold: np.ndarray) -> StsResult:
    """Spearman and Pearson correlation of predicted similarities against gold scores."""
    return StsResult(float(spearmanr(predicted, gold).statistic), float(pearsonr(predicted, gold).statistic), len(gold))


def run_sts(model: SentenceTransformer, data: StsData, batch_size: int = 64) -> StsRun:
    predicted = cosine_scores(model, data, batch_size)
    return StsRun(data, predicted, correlations(predicted, data.scores))


def evaluate_sts(model: SentenceTransformer, data: StsData, batch_size: int = 64) -> StsResult:
    """Spearman and Pearson correlation of cosine similarity against the gold scores."""
    return run_sts(model, data, batch_size).result


def mean_result(results: Sequence[StsResult]) -> StsResult:
    """Unweighted mean of the correlations over data sets; `n` is the total pair count."""
    return StsResult(
        float(np.mean([r.spearman for r in results])), float(np.mean([r.pearson for r in results])), sum(r.n for r in results)
    )
