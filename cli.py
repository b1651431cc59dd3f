"""`simsearch` command line: parses arguments, calls the library, prints results.

User mistakes (SimsearchError) become one line on stderr and exit code 1 (bad
data) or 2 (bad usage); nothing here holds logic that tests cannot reach
through the library.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from embedder.corpus import FORMATS, CorpusSpec, read_corpus, scan_corpus
from errors import SimsearchError, UsageError

MODEL_HELP = "Model: a local folder, a Hugging Face name, or 'default' (all-MiniLM-L6-v2, bundled, offline)."
FORMAT_HELP = "Input format; default from the extension (.txt text, .tsv, .csv, .jsonl)."


class SimsearchGroup(click.Group):
    """A click group that reports SimsearchError as one line instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SimsearchError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def corpus_options(func):
    """Options shared by every command that reads a corpus file."""
    func = click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help=FORMAT_HELP)(func)
    func = click.option("--id-column", default=None, help="Column (TSV/CSV) or field (JSONL) with int64 ids; default: line numbers.")(func)
    func = click.option("--text-column", default="text", show_default=True, help="Column (TSV/CSV) or field (JSONL) holding the text.")(func)
    return func


def batch_size_option(func):
    return click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Sentences per encoder batch.")(func)


@click.group(cls=SimsearchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="simsearch")
def main() -> None:
    """Sentence-embedding retrieval: encode, index with FAISS, query, evaluate."""


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to write the .npy array.")
@click.option("--model", default=None, help=MODEL_HELP)
@batch_size_option
@corpus_options
def encode(input_path: Path, output: Path, model: str | None, batch_size: int, text_column: str, id_column: str | None, fmt: str | None) -> None:
    """Embed every sentence of INPUT into OUT.npy (float32, one normalized row per sentence, file order)."""
    from embedder import encode as encode_texts
    from embedder import load_model

    spec = CorpusSpec(input_path, text_column, id_column, fmt)
    scan_corpus(spec)
    texts = [doc.text for doc in read_corpus(spec)]
    vectors = encode_texts(load_model(model), texts, batch_size)
    partial = output.with_name(output.name + ".partial")
    with open(partial, "wb") as handle:
        np.save(handle, vectors)
    partial.replace(output)
    click.echo(f"wrote {output}: {vectors.shape[0]} x {vectors.shape[1]} float32", err=True)


@main.group(cls=SimsearchGroup)
def index() -> None:
    """Build and inspect index folders."""


@index.command("build")
@click.argument("corpus", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Index folder to create.")
@click.option("--model", default=None, help=MODEL_HELP)
@batch_size_option
@corpus_options
@click.option("--overwrite", is_flag=True, help="Replace an existing index folder (only once the new one is complete).")
def index_build(
    corpus: Path, output: Path, model: str | None, batch_size: int, text_column: str, id_column: str | None, fmt: str | None, overwrite: bool
) -> None:
    """Embed CORPUS and write an exact (flat, cosine) index folder to --output."""
    from index import BuildConfig, build_index

    manifest = build_index(CorpusSpec(corpus, text_column, id_column, fmt), output, BuildConfig(model, batch_size, overwrite))
    blank = manifest.source.get("blank_lines_skipped", 0)
    click.echo(f"indexed {manifest.document_count} documents ({blank} blank lines skipped) into {output}", err=True)


@index.command("info")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def index_info(folder: Path, as_json: bool) -> None:
    """Show what an index folder holds (its manifest)."""
    from dataclasses import asdict

    from index import Manifest

    fields = asdict(Manifest.read(folder))
    if as_json:
        click.echo(json.dumps(fields, indent=2, ensure_ascii=False))
        return
    for key, value in fields.items():
        click.echo(f"{key:<18} {json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value}")


@main.command()
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.argument("text", required=False)
@click.option("--queries", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="File of queries (one per line, or TSV/CSV/JSONL).")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Hits per query.")
@click.option("--json", "as_json", is_flag=True, help='One JSON object per query per line: {"query", "hits": [{"id", "score", "text", ...}]}.')
@batch_size_option
def query(folder: Path, text: str | None, queries: Path | None, k: int, as_json: bool, batch_size: int) -> None:
    """Find the K documents of index DIR most similar to TEXT (or to each line of --queries)."""
    from index import load_index

    if (text is None) == (queries is None):
        raise UsageError("give either a query TEXT or --queries FILE (exactly one)")
    texts = [text] if text is not None else [doc.text for doc in read_corpus(CorpusSpec(queries))]
    if not texts or not all(t.strip() for t in texts):
        raise UsageError("the query is empty")
    found = load_index(folder).search(texts, k, batch_size)
    for query_text, hits in zip(texts, found):
        if as_json:
            click.echo(json.dumps({"query": query_text, "hits": [h.to_json() for h in hits]}, ensure_ascii=False))
            continue
        click.echo(f"query: {query_text}")
        for rank, hit in enumerate(hits, start=1):
            click.echo(f"{rank:>4}  {hit.score:.4f}  [{hit.id}]  {hit.text}")


@main.group(name="eval", cls=SimsearchGroup)
def evaluate() -> None:
    """Measure model quality."""


@evaluate.command("sts")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="STS-B (en .tsv.gz or zh .data), SICK, or an s1/s2/score TSV/CSV.")
@click.option("--split", default="test", show_default=True, help="Split to use when the file has a split column (train, dev, test).")
@click.option("--model", default=None, help=MODEL_HELP)
@click.option("--json", "as_json", is_flag=True, help='Print {"spearman", "pearson", "n", "data", "model"}.')
@batch_size_option
def eval_sts(data: Path, split: str, model: str | None, as_json: bool, batch_size: int) -> None:
    """Spearman and Pearson correlation between cosine similarity and gold scores."""
    from embedder import load_model, model_reference
    from eval import evaluate_sts, load_sts

    pairs = load_sts(data, split)
    result = evaluate_sts(load_model(model), pairs, batch_size)
    if as_json:
        click.echo(json.dumps({**result.as_dict(), "data": str(data), "model": model_reference(model)}))
        return
    click.echo(f"data      {pairs.name}\nmodel     {model_reference(model)}\npairs     {result.n}")
    click.echo(f"spearman  {result.spearman * 100:.2f}\npearson   {result.pearson * 100:.2f}")


class DimType(click.ParamType):
    """--dim: a positive integer or 'auto'."""

    name = "K|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            number = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a whole number nor 'auto'", param, ctx)
        if number < 1:
            self.fail(f"{number} is not a positive dimension", param, ctx)
        return number


def reduce_options(func):
    """Options shared by `reduce whiten` and `reduce jl`: output, how `--dim auto` measures, batch size."""
    func = click.option("--overwrite", is_flag=True, help="Replace an existing OUT folder (only once the new one is complete).")(func)
    func = batch_size_option(func)
    func = click.option("--recall-docs", type=click.IntRange(min=11), default=10_000, show_default=True, help="Fit sentences kept to measure recall@10 for --dim auto.")(func)
    func = click.option("--metric", type=click.Choice(["spearman", "recall"]), default=None, help="What --dim auto keeps: dev Spearman on --data, or recall@10 vs full-dim search on --fit. Default: spearman when --data is given.")(func)
    func = click.option("--target", type=click.FloatRange(0, 1, min_open=True), default=0.99, show_default=True, help="--dim auto: keep at least this fraction of the full-dim score.")(func)
    func = click.option("--split", default="dev", show_default=True, help="Split of --data that --dim auto measures on.")(func)
    func = click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help="STS file for --dim auto (Spearman), e.g. STS-B.")(func)
    func = click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for the reduced model.")(func)
    func = click.option("--dim", type=DimType(), required=True, help="Output dimension, or 'auto': the smallest sweep dim keeping --target of the full-dim score.")(func)
    return func


def _run_reduction(method: str, model: str, fit: Path | None, spec_options: tuple, output: Path, **options) -> None:
    """Shared body of `reduce whiten` and `reduce jl`: reduce, save, report what was chosen and guaranteed."""
    from embedder.reduce_model import ReduceConfig, reduce_model
    from embedder.reduction import jl_summary
    from eval import load_sts

    text_column, id_column, fmt = spec_options
    spec = CorpusSpec(fit, text_column, id_column, fmt) if fit is not None else None
    data, split = options.pop("data"), options.pop("split")
    sts = load_sts(data, split) if data is not None else None
    config = ReduceConfig(method=method, **options)
    outcome = reduce_model(model, output, config, spec, sts)
    info, choice = outcome.info, outcome.choice
    if choice is not None:
        scores = ", ".join(f"{k}: {v:.4f}" for k, v in choice.scores.items())
        click.echo(f"{choice.measure} at full dim {choice.full:.4f}; {method} {scores}", err=True)
        if choice.dim is None:
            click.echo(f"no {method} dim keeps {choice.target:.0%} of it: {output} is the model without reduction ({info['output_dim']} dims)", err=True)
        else:
            click.echo(f"auto chose k={choice.dim} (smallest keeping ≥ {choice.target:.0%})", err=True)
    if info["method"] != "none":
        guarantee = jl_summary(outcome.documents, info["output_dim"]) if outcome.documents else "JL lemma: give --fit FILE to see the ε guaranteed for your corpus size"
        click.echo(guarantee, err=True)
    click.echo(f"wrote {output}: {info['method']} {info['input_dim']} → {info['output_dim']} dims", err=True)


@main.group(name="reduce", cls=SimsearchGroup)
def reduce_group() -> None:
    """Shrink a model's vectors (whitening or JL random projection), saved inside a new model folder."""


@reduce_group.command("whiten")
@click.argument("model")
@click.option("--fit", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="Unlabeled corpus to fit mean and covariance on (any corpus format).")
@corpus_options
@reduce_options
def reduce_whiten(model: str, fit: Path, text_column: str, id_column: str | None, fmt: str | None, output: Path, **options) -> None:
    """BERT-whitening of MODEL: y = (x − μ)·U·diag(1/√S)[:, :K], fitted on --fit, saved to OUT.

    The map is appended to the model as a Dense layer plus Normalize, so
    SentenceTransformer(OUT).encode returns the reduced vectors. --dim auto
    measures dev Spearman on --data, else recall@10 on the fit corpus.
    """
    _run_reduction("whiten", model, fit, (text_column, id_column, fmt), output, **options)


@reduce_group.command("jl")
@click.argument("model")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the Gaussian projection matrix.")
@click.option("--fit", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help="Corpus for --dim auto (recall@10) and for the JL bound's N (optional).")
@corpus_options
@reduce_options
def reduce_jl(model: str, seed: int, fit: Path | None, text_column: str, id_column: str | None, fmt: str | None, output: Path, **options) -> None:
    """Johnson–Lindenstrauss random projection of MODEL: Gaussian N(0, 1/K) matrix from --seed, saved to OUT."""
    _run_reduction("jl", model, fit, (text_column, id_column, fmt), output, seed=seed, **options)


@reduce_group.command("sweep")
@click.argument("model")
@click.option("--fit", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="Unlabeled corpus: whitening is fitted on it and recall@10 measured on it.")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="STS file for Spearman, e.g. STS-B.")
@click.option("--split", default="dev", show_default=True, help="Split of --data.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also save the sweep as a PNG plot (needs matplotlib).")
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
    from embedder.dim_choice import format_sweep, plot_sweep
    from embedder.reduce_model import sweep_model
    from embedder.reduction import jl_summary
    from eval import load_sts

    pairs = load_sts(data, split)
    result = sweep_model(model, CorpusSpec(fit, text_column, id_column, fmt), pairs, seeds, batch_size, recall_docs)
    if as_json:
        click.echo(json.dumps({"documents": result.documents, "model_dim": result.model_dim, "rows": [r.as_dict() for r in result.rows]}))
    else:
        click.echo(f"model {model}  fit {fit} ({result.documents:,} sentences)  data {pairs.name}")
        click.echo(format_sweep(result.rows, result.documents))
        click.echo(jl_summary(result.documents, min(r.dim for r in result.rows)))
    if plot is not None:
        plot_sweep(result.rows, plot, f"{model} · {pairs.name}")
        click.echo(f"wrote {plot}", err=True)


if __name__ == "__main__":
    main()
