"""STS evaluation: how well cosine similarity of embeddings ranks pairs like human scores."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sentence_transformers import SentenceTransformer

from embedder import encode
from eval.sts_data import StsData


@dataclass(frozen=True)
class StsResult:
    """Correlations in [-1, 1] between cosine similarity and gold scores over `n` pairs."""

    spearman: float
    pearson: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def cosine_scores(model: SentenceTransformer, data: StsData, batch_size: int = 64) -> np.ndarray:
    """Cosine similarity of each pair; every distinct sentence is encoded once."""
    unique = list(dict.fromkeys(data.sentences1 + data.sentences2))
    position = {s: i for i, s in enumerate(unique)}
    vectors = encode(model, unique, batch_size, normalize=True)
    a = vectors[[position[s] for s in data.sentences1]]
    b = vectors[[position[s] for s in data.sentences2]]
    return np.einsum("ij,ij->i", a, b, dtype=np.float64)


def evaluate_sts(model: SentenceTransformer, data: StsData, batch_size: int = 64) -> StsResult:
    """Spearman and Pearson correlation of cosine similarity against the gold scores."""
    predicted = cosine_scores(model, data, batch_size)
    return StsResult(
        spearman=float(spearmanr(predicted, data.scores).statistic),
        pearson=float(pearsonr(predicted, data.scores).statistic),
        n=len(data),
    )
