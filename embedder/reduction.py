"""Linear dimension reduction of a model's embeddings: BERT-whitening, JL random projection and truncation.

A reduction is a `LinearMap` y = (x − shift) @ matrix applied to the model's output,
then L2-normalized. It is saved *inside* the model as a sentence-transformers Dense
module (identity activation) followed by Normalize, plus a marker file
`simsearch_reduction.json` describing it, so an index built from the reduced
model records which reduction made its vectors.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize

from common.atomic import atomic_folder
from common.chunking import chunks
from common.corpus import CorpusSpec, read_corpus, scan_corpus
from common.progress import progress_bar
from embedder.encoding import encode
from embedder.loading import embedding_dim
from embedder.model_files import REDUCTION_MARKER
from errors import DataError, UsageError

METHODS = ("whiten", "jl", "truncate")
# Embeddings arrive as float32 (relative precision ~1e-7): a direction whose variance is below
# this fraction of the largest (std below ~1e-5 of it) is rounding noise, and whitening it
# would blow that noise up to unit variance.
RANK_TOLERANCE = 1e-10


@dataclass
class CovarianceAccumulator:
    """Running mean and scatter matrix in float64, merged batch by batch (Chan et al.).

    Only d + d² numbers are kept, so a corpus of any size can be fitted.
    """

    dim: int
    count: int = 0
    mean: np.ndarray = field(init=False)
    scatter: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.mean = np.zeros(self.dim, dtype=np.float64)
        self.scatter = np.zeros((self.dim, self.dim), dtype=np.float64)

    def update(self, batch: np.ndarray) -> None:
        """Add the rows of `batch` (n, dim) to the statistics."""
        batch = np.asarray(batch, dtype=np.float64).reshape(-1, self.dim)
        n = batch.shape[0]
        if n == 0:
            return
        batch_mean = batch.mean(axis=0)
        centered = batch - batch_mean
        delta = batch_mean - self.mean
        total = self.count + n
        self.scatter += centered.T @ centered + np.outer(delta, delta) * (self.count * n / total)
        self.mean += delta * (n / total)
        self.count = total

    def covariance(self) -> np.ndarray:
        """Sample covariance (divides by n − 1, as numpy.cov and sklearn's PCA do)."""
        if self.count < 2:
            raise DataError(f"whitening needs at least 2 sentences, got {self.count}")
        return self.scatter / (self.count - 1)


@dataclass(frozen=True)
class LinearMap:
    """y = (x − shift) @ matrix: one reduction, before the final L2 normalization."""

    method: str
    matrix: np.ndarray  # (input_dim, output_dim), float64
    shift: np.ndarray | None = None  # the fit mean μ for whitening, None for JL

    @property
    def input_dim(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def output_dim(self) -> int:
        return int(self.matrix.shape[1])

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Reduce rows of `x` in float64 (not normalized)."""
        x = np.asarray(x, dtype=np.float64)
        return (x - self.shift if self.shift is not None else x) @ self.matrix

    def dense_module(self) -> Dense:
        """The same map as a sentence-transformers Dense layer: weight Wᵀ, bias −μW, identity activation."""
        weight = torch.tensor(np.ascontiguousarray(self.matrix.T), dtype=torch.float32)  # row-major like a loaded layer
        bias = None if self.shift is None else torch.tensor(-(self.shift @ self.matrix), dtype=torch.float32)
        return Dense(
            self.input_dim, self.output_dim, bias=bias is not None, activation_function=torch.nn.Identity(), init_weight=weight, init_bias=bias
        )


@dataclass(frozen=True)
class WhiteningFit:
    """Mean and eigen-decomposition Σ = U S Uᵀ of the fit embeddings; `map(k)` keeps the first k components."""

    mean: np.ndarray
    components: np.ndarray  # U, columns sorted by decreasing variance
    variances: np.ndarray  # S
    count: int

    @property
    def rank(self) -> int:
        """Components with non-negligible variance: whitening can divide by no others."""
        return int(np.sum(self.variances > self.variances[0] * RANK_TOLERANCE))

    def map(self, k: int) -> LinearMap:
        """W = U[:, :k] · diag(1/√S[:k]), shift μ."""
        check_dim(k, len(self.mean))
        if k > self.rank:
            raise DataError(
                f"the fit corpus spans only {self.rank} dimensions ({self.count} sentences); "
                f"whitening to {k} needs a larger fit corpus or a smaller --dim"
            )
        return LinearMap("whiten", self.components[:, :k] / np.sqrt(self.variances[:k]), self.mean.copy())


def fit_whitening(stats: CovarianceAccumulator) -> WhiteningFit:
    """SVD of the covariance; each component's sign is fixed (largest entry positive) so fits are reproducible."""
    u, s, _ = np.linalg.svd(stats.covariance(), hermitian=True)
    signs = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(u.shape[1])])
    signs[signs == 0] = 1.0
    return WhiteningFit(stats.mean.copy(), u * signs, s, stats.count)


def jl_map(input_dim: int, k: int, seed: int = 0) -> LinearMap:
    """Gaussian random projection: entries drawn from N(0, 1/k) by a seeded generator."""
    check_dim(k, input_dim)
    rng = np.random.default_rng(seed)
    return LinearMap("jl", rng.normal(0.0, 1.0 / math.sqrt(k), size=(input_dim, k)))


def truncation_map(input_dim: int, k: int) -> LinearMap:
    """Keep the first k coordinates (an identity slice): what a Matryoshka-trained model is made for."""
    check_dim(k, input_dim)
    return LinearMap("truncate", np.eye(input_dim, k))


def check_dim(k: int, model_dim: int) -> None:
    """A target dimension must be between 1 and the model's output dimension."""
    if k < 1:
        raise UsageError(f"--dim must be at least 1, got {k}")
    if k > model_dim:
        raise UsageError(f"--dim {k} is larger than the model's embedding dimension ({model_dim}); reduction can only shrink vectors")


def jl_min_dim(n: int, eps: float) -> int:
    """Johnson–Lindenstrauss bound: k ≥ 4 ln N / (ε²/2 − ε³/3) keeps all pairwise squared distances within 1 ± ε."""
    # sklearn's johnson_lindenstrauss_min_dim truncates (409.9 → 409); the bound needs the ceiling.
    return math.ceil(4 * math.log(n) / (eps**2 / 2 - eps**3 / 3))


def jl_epsilon(n: int, k: int) -> float | None:
    """The ε that the JL bound guarantees for N points at dimension k; None when k is too small for any ε < 1."""
    if n < 2:
        return 0.0
    need = 4 * math.log(n) / k
    if need >= 1 / 6:  # ε²/2 − ε³/3 rises on (0, 1) to 1/6 at ε = 1
        return None
    return float(brentq(lambda e: e * e / 2 - e**3 / 3 - need, 1e-12, 1.0))


def jl_summary(n: int, k: int) -> str:
    """One line: what the JL lemma guarantees for N points at k dims (versus what is measured elsewhere)."""
    eps = jl_epsilon(n, k)
    guarantee = f"k={k} guarantees ε={eps:.3f}" if eps is not None else f"k={k} is below the bound for any ε<1 (no guarantee)"
    return f"JL lemma for N={n:,}: k ≥ {jl_min_dim(n, 0.1):,} for ε=0.1, ≥ {jl_min_dim(n, 0.5):,} for ε=0.5; {guarantee}"


@dataclass
class CorpusEmbeddings:
    """One streaming pass over a fit corpus: covariance statistics, the first rows kept, and the count."""

    stats: CovarianceAccumulator
    sample: np.ndarray
    documents: int


def embed_corpus(
    model: SentenceTransformer,
    spec: CorpusSpec,
    batch_size: int = 64,
    keep: int = 10_000,
    whole: bool = True,
    show_progress: bool | None = None,
    chunk_size: int = 2048,
) -> CorpusEmbeddings:
    """Encode the corpus chunk by chunk (raw model output), accumulating float64 statistics.

    The first `keep` embeddings are kept for recall measurements; `whole=False`
    stops after those (enough for JL, which needs no statistics).
    """
    total = scan_corpus(spec).documents
    dim = embedding_dim(model)
    stats = CovarianceAccumulator(dim)
    kept: list[np.ndarray] = []
    held = 0
    target = total if whole else min(total, keep)
    with progress_bar(target, "embedding fit corpus", "sent", show_progress) as bar:
        for texts in chunks((d.text for d in read_corpus(spec)), chunk_size):
            vectors = encode(model, texts, batch_size, normalize=False, show_progress=False)
            if held < keep:
                kept.append(vectors[: keep - held])
                held += len(kept[-1])
            stats.update(vectors)
            bar.update(len(texts))
            if not whole and held >= keep:
                break
    sample = np.concatenate(kept) if kept else np.zeros((0, dim), dtype=np.float32)
    return CorpusEmbeddings(stats, sample, total)


def build_reduced_model(model: SentenceTransformer, reduction: LinearMap) -> SentenceTransformer:
    """Append Dense(reduction) and Normalize to `model` (in place) and return it."""
    if reduction.input_dim != embedding_dim(model):
        raise UsageError(f"reduction expects {reduction.input_dim}-dim input, the model gives {embedding_dim(model)}")
    model.append(reduction.dense_module().to(model.device))
    model.append(Normalize())
    return model


def save_model(model: SentenceTransformer, out: Path, info: dict[str, Any], overwrite: bool = False) -> None:
    """Write the model folder atomically, with `info` as its reduction marker."""
    with atomic_folder(out, overwrite) as work:
        model.save(str(work))
        (work / REDUCTION_MARKER).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
