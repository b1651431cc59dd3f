"""The work behind `simsearch reduce whiten|jl|truncate|sweep`: fit a reduction for a model, choose k, save the reduced model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sentence_transformers import SentenceTransformer

from common.atomic import check_target
from common.corpus import CorpusSpec, scan_corpus
from embedder.dim_choice import Choice, Measure, RecallMeasure, SweepRow, candidate_dims, choose_dim, shown, sts_measure, sweep
from embedder.loading import embedding_dim, load_model
from embedder.model_files import model_reference, reduction_of, trained_dims
from embedder.reduction import (
    METHODS,
    CorpusEmbeddings,
    LinearMap,
    build_reduced_model,
    check_dim,
    embed_corpus,
    fit_whitening,
    jl_epsilon,
    jl_map,
    jl_summary,
    save_model,
    truncation_map,
)
from errors import UsageError
from common.sts_data import StsData

AUTO = "auto"


@dataclass(frozen=True)
class ReduceConfig:
    """How to reduce: method, target dim (an int or 'auto'), and how `auto` measures."""

    method: str
    dim: int | str
    seed: int = 0
    target: float = 0.99
    metric: str | None = None  # 'spearman' or 'recall'; None: spearman when STS data is given, else recall
    batch_size: int = 64
    recall_docs: int = 10_000  # fit sentences kept in memory to measure recall@10
    overwrite: bool = False
    show_progress: bool | None = None


@dataclass(frozen=True)
class ReduceOutcome:
    """What was saved (the marker written into the model) and, for `auto`, how k was chosen."""

    info: dict[str, Any]
    choice: Choice | None
    documents: int | None  # fit corpus size: the N of the JL bound

    def summary(self, output: Path) -> list[str]:
        """What was measured and chosen, what is guaranteed (JL) or trained for (Matryoshka), and what was written: one line each."""
        info, choice, method = self.info, self.choice, self.info["method"]
        lines = []
        if choice is not None:
            asked = choice.measure
            unit = " ×100" if asked == "spearman" else ""
            lines.append(f"{asked}{unit} at full dim {shown(asked, choice.full)}; " + ", ".join(f"{k}: {shown(asked, v)}" for k, v in choice.scores.items()))
            if choice.dim is None:
                lines.append(f"no dim keeps {choice.target:.0%} of it: {output} is the model without reduction ({info['output_dim']} dims)")
            else:
                lines.append(f"auto chose k={choice.dim} (smallest keeping ≥ {choice.target:.0%})")
        if method == "truncate":
            lines.append(self._truncation_note())
        elif method != "none":
            lines.append(jl_summary(self.documents, info["output_dim"]) if self.documents else "JL lemma: give --fit FILE to see the ε guaranteed for your corpus size")
        lines.append(f"wrote {output}: {method} {info['input_dim']} → {info['output_dim']} dims")
        return lines

    def _truncation_note(self) -> str:
        """Whether the model was trained to be cut at this dim (Matryoshka) or not."""
        trained, dim = self.info.get("matryoshka_dims"), self.info["output_dim"]
        if not trained:
            return "not trained with --matryoshka: expect a larger loss than at trained dims"
        return f"trained with Matryoshka at {trained}" + ("" if dim in trained else f"; {dim} is not one of them")


def _metric(config: ReduceConfig, fit: CorpusSpec | None, sts: StsData | None) -> str:
    """Which measure `--dim auto` uses, or a clear error when it has nothing to measure against."""
    metric = config.metric or ("spearman" if sts is not None else "recall" if fit is not None else None)
    if metric is None:
        raise UsageError("--dim auto needs something to measure against: give --data STSFILE (dev Spearman) or --fit FILE (recall@10 vs full-dim search)")
    if metric == "spearman" and sts is None:
        raise UsageError("--metric spearman needs --data STSFILE")
    if metric == "recall" and fit is None:
        raise UsageError("--metric recall needs --fit FILE (recall@10 is measured on the fit corpus)")
    return metric


def _fit_pass(model: SentenceTransformer, config: ReduceConfig, fit: CorpusSpec | None, keep: int) -> CorpusEmbeddings | None:
    """Encode the fit corpus: all of it for whitening, only the recall sample for JL and truncation."""
    if fit is None or (config.method != "whiten" and keep == 0):
        return None
    return embed_corpus(model, fit, config.batch_size, keep=keep, whole=config.method == "whiten", show_progress=config.show_progress)


def reduce_model(
    model_name: str | None, out: Path, config: ReduceConfig, fit: CorpusSpec | None = None, sts: StsData | None = None
) -> ReduceOutcome:
    """Fit `config.method` on `fit` (whitening), draw it from the seed (JL) or slice (truncation), pick k, and save the reduced model to `out`."""
    if config.method not in METHODS:
        raise UsageError(f"unknown reduction {config.method!r} (expected one of {', '.join(METHODS)})")
    if config.method == "whiten" and fit is None:
        raise UsageError("whitening needs a fit corpus: give --fit FILE")
    if not 0 < config.target <= 1:
        raise UsageError(f"--target must be in (0, 1], got {config.target}")
    check_target(out, config.overwrite)
    auto = config.dim == AUTO
    metric = _metric(config, fit, sts) if auto else None
    documents = scan_corpus(fit).documents if fit is not None else None  # fail on a bad line before encoding
    model = load_model(model_name)
    model_dim = embedding_dim(model)
    if not auto:
        check_dim(int(config.dim), model_dim)

    fitted = _fit_pass(model, config, fit, keep=config.recall_docs if metric == "recall" else 0)
    if config.method == "whiten":
        whitening = fit_whitening(fitted.stats)
        make: Callable[[int], LinearMap] = whitening.map
        candidates = [k for k in candidate_dims(model_dim) if k <= whitening.rank]
    elif config.method == "jl":
        make = lambda k: jl_map(model_dim, k, config.seed)  # noqa: E731
        candidates = [k for k in candidate_dims(model_dim) if k < model_dim]  # JL at full dim only adds noise
    else:
        make = lambda k: truncation_map(model_dim, k)  # noqa: E731
        candidates = [k for k in candidate_dims(model_dim) if k < model_dim]

    choice = None
    if auto:
        measure: Measure = sts_measure(model, sts, config.batch_size) if metric == "spearman" else RecallMeasure(fitted.sample)
        choice = choose_dim(candidates, measure, make, config.target)
        dim = choice.dim
    else:
        dim = int(config.dim)

    info: dict[str, Any] = {
        "method": config.method if dim is not None else "none",
        "input_dim": model_dim,
        "output_dim": dim if dim is not None else model_dim,
        "base_model": model_reference(model_name),
        "fit_corpus": str(fit.path.resolve()) if fit is not None else None,
        "fit_documents": documents,
        "seed": config.seed if config.method == "jl" else None,
        "jl_epsilon": jl_epsilon(documents, dim) if documents and dim else None,
        "chosen_by": choice.as_dict() if choice else None,
    }
    if config.method == "truncate":
        info["matryoshka_dims"] = trained_dims(model_name)  # the dims the model was trained to be cut at, if any
    if previous := reduction_of(model_name):
        info["previous"] = previous
    if dim is not None:
        build_reduced_model(model, make(dim))
    save_model(model, out, info, config.overwrite)
    return ReduceOutcome(info, choice, documents)


@dataclass(frozen=True)
class SweepResult:
    """A sweep's rows, the fit corpus size (the JL bound's N), the model's dim and the STS set's name."""

    rows: list[SweepRow]
    documents: int
    model_dim: int
    data: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"documents": self.documents, "model_dim": self.model_dim, "rows": [r.as_dict() for r in self.rows]}


def sweep_model(
    model_name: str | None, fit: CorpusSpec, sts: StsData, seeds: int = 5, batch_size: int = 64, recall_docs: int = 10_000, show_progress: bool | None = None
) -> SweepResult:
    """Whitening (fitted on `fit`), JL (seeds 0..seeds-1) and truncation at every sweep dim: STS Spearman and recall@10 on `fit`."""
    model = load_model(model_name)
    model_dim = embedding_dim(model)
    fitted = embed_corpus(model, fit, batch_size, keep=recall_docs, show_progress=show_progress)
    whitening = fit_whitening(fitted.stats)
    measures = [sts_measure(model, sts, batch_size), RecallMeasure(fitted.sample)]
    rows = sweep(model_dim, measures, lambda k: whitening.map(k) if k <= whitening.rank else None, lambda k, seed: jl_map(model_dim, k, seed), range(seeds))
    return SweepResult(rows, fitted.documents, model_dim, sts.name)
