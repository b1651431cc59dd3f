"""The `simsearch` commands that make models: `train` and `reduce whiten|jl|truncate|sweep` (registered in cli.py).

Like cli.py they only parse, call one library function and print.
"""

from __future__ import annotations

from pathlib import Path

import click

from cli_options import IN_FILE, TRAIN_HELP, SimsearchGroup, batch_size_option, corpus_options, json_line, reduce_options, train_options
from common.corpus import CorpusSpec
from embedder.training_methods import METHODS, RERANK


@click.command(help=TRAIN_HELP)
@click.argument("method", type=click.Choice((*METHODS, RERANK)))
@train_options
def train(
    method: str, train_sets: tuple[str, ...], dev: Path | None, base: str | None, output: Path, epochs: int | None, batch_size: int | None, lr: float | None,
    max_seq_length: int | None, pooling: str | None, seed: int, eval_steps: int | None, max_score: float | None, sampler: str, matryoshka: str | None,
    seeds: int, average: bool, search: str | None, trials: int | None, loss: str | None, overwrite: bool, resume: bool,
) -> None:
    import logging

    from embedder.training import TrainConfig, parse_dims
    from embedder.training_runs import RunPlan
    from simsearch.api import train as run_training

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("simsearch.train").setLevel(logging.INFO)
    config = TrainConfig(
        method, train_sets, output, dev=dev, base=base, epochs=epochs, batch_size=batch_size, lr=lr, max_seq_length=max_seq_length,
        pooling=pooling, seed=seed, eval_steps=eval_steps, max_score=max_score, sampler=sampler,
        matryoshka=parse_dims(matryoshka) if matryoshka else (), loss=loss, overwrite=overwrite, resume=resume,
    )
    run_training(config, RunPlan(seeds, average, search, trials))


def run_reduction(method: str, model: str, fit: Path | None, spec_options: tuple, output: Path, data: Path | None, split: str, **options) -> None:
    """`reduce whiten|jl|truncate`: reduce, save, print what was chosen and guaranteed."""
    from embedder.reduce_model import ReduceConfig
    from simsearch.api import reduce

    spec = CorpusSpec(fit, *spec_options) if fit is not None else None
    outcome = reduce(method, model, output, ReduceConfig(method=method, **options), spec, data, split)
    for line in outcome.summary(output):
        click.echo(line, err=True)


@click.group(name="reduce", cls=SimsearchGroup)
def reduce_group() -> None:
    """Shrink a model's vectors (whitening, JL random projection or truncation), saved inside a new model folder."""


@reduce_group.command("whiten")
@click.argument("model")
@click.option("--fit", type=IN_FILE, required=True, help="Unlabeled corpus to fit mean and covariance on (any corpus format).")
@corpus_options
@reduce_options
def reduce_whiten(model: str, fit: Path, text_column: str, id_column: str | None, fmt: str | None, output: Path, **options) -> None:
    """BERT-whitening of MODEL: y = (x − μ)·U·diag(1/√S)[:, :K], fitted on --fit, saved to OUT.

    The map is appended to the model as a Dense layer plus Normalize, so
    SentenceTransformer(OUT).encode returns the reduced vectors. --dim auto
    measures dev Spearman on --data, else recall@10 on the fit corpus.
    """
    run_reduction("whiten", model, fit, (text_column, id_column, fmt), output, **options)


@reduce_group.command("jl")
@click.argument("model")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the Gaussian projection matrix.")
@click.option("--fit", type=IN_FILE, default=None, help="Corpus for --dim auto (recall@10) and for the JL bound's N (optional).")
@corpus_options
@reduce_options
def reduce_jl(model: str, seed: int, fit: Path | None, text_column: str, id_column: str | None, fmt: str | None, output: Path, **options) -> None:
    """Johnson–Lindenstrauss random projection of MODEL: Gaussian N(0, 1/K) matrix from --seed, saved to OUT."""
    run_reduction("jl", model, fit, (text_column, id_column, fmt), output, seed=seed, **options)


@reduce_group.command("truncate")
@click.argument("model")
@click.option("--dim", type=click.IntRange(min=1), required=True, help="Keep the first K dims (best for a model trained with --matryoshka at K).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for the reduced model.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT folder (only once the new one is complete).")
def reduce_truncate(model: str, dim: int, output: Path, overwrite: bool) -> None:
    """Truncate MODEL's vectors to their first K dims (a Dense identity slice, then Normalize), saved to OUT."""
    run_reduction("truncate", model, None, (), output, None, "dev", dim=dim, overwrite=overwrite)


@reduce_group.command("sweep")
@click.argument("model")
@click.option("--fit", type=IN_FILE, required=True, help="Unlabeled corpus: whitening is fitted on it and recall@10 measured on it.")
@click.option("--data", type=IN_FILE, required=True, help="STS file for Spearman, e.g. STS-B.")
@click.option("--split", default="dev", show_default=True, help="Split of --data.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also save the sweep as a PNG plot.")
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True, help="JL seeds (0..N-1) averaged per dim.")
@click.option("--recall-docs", type=click.IntRange(min=11), default=10_000, show_default=True, help="Fit sentences searched for recall@10 (the first 1000 are queries).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
@corpus_options
@batch_size_option
def reduce_sweep(
    model: str, fit: Path, data: Path, split: str, plot: Path | None, seeds: int, recall_docs: int, as_json: bool,
    text_column: str, id_column: str | None, fmt: str | None, batch_size: int,
) -> None:
    """Table of dim × method (whitening, JL mean ± std over seeds) vs STS Spearman and recall@10 against full-dim exact search."""
    from embedder.dim_choice import format_sweep
    from embedder.reduction import jl_summary
    from simsearch.api import sweep

    result = sweep(model, CorpusSpec(fit, text_column, id_column, fmt), data, split, seeds, batch_size, recall_docs, plot)
    if as_json:
        json_line(result.as_dict())
    else:
        click.echo(f"model {model}  fit {fit} ({result.documents:,} sentences)  data {result.data}")
        click.echo(format_sweep(result.rows, result.documents))
        click.echo(jl_summary(result.documents, min(r.dim for r in result.rows)))
    if plot is not None:
        click.echo(f"wrote {plot}", err=True)
