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
from embedder.pooling import POOLINGS
from embedder.training_data import METHODS
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


def parse_columns(value: str | None) -> tuple[str, str, str] | None:
    """`--columns s1,s2,score` → a 3-tuple of names."""
    if value is None:
        return None
    names = tuple(part.strip() for part in value.split(","))
    if len(names) != 3 or not all(names):
        raise UsageError(f"--columns needs three names: sentence1,sentence2,score (got {value!r})")
    return names  # type: ignore[return-value]


@evaluate.command("sts")
@click.option("--data", "datasets", multiple=True, required=True, metavar="FILE[:SPLIT]",
              help="STS-B (en .tsv.gz or zh .data), SICK, or an s1/s2/score TSV/CSV/JSONL; repeat for several sets.")
@click.option("--split", default="test", show_default=True, help="Split for files with a split column (train, dev, test), unless FILE:SPLIT says.")
@click.option("--columns", default=None, metavar="S1,S2,SCORE", help="Column/field names for sentence1, sentence2 and score in your own file.")
@click.option("--model", default=None, help=MODEL_HELP)
@click.option("--json", "as_json", is_flag=True, help='One object per set per line: {"spearman", "pearson", "n", "data", "split", "model"}, then a "mean" line for several sets.')
@click.option("--csv", "as_csv", is_flag=True, help="Print the table as CSV.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a PNG: gold score vs cosine per set.")
@batch_size_option
def eval_sts(datasets: tuple[str, ...], split: str, columns: str | None, model: str | None, as_json: bool, as_csv: bool, plot: Path | None, batch_size: int) -> None:
    """Spearman and Pearson correlation between cosine similarity and gold scores, one row per set."""
    from embedder import load_model, model_reference
    from eval import load_sts, mean_result, parse_data_arg, run_sts
    from eval.tables import format_csv, format_table

    mapping = parse_columns(columns)
    sources = [parse_data_arg(value, split) for value in datasets]
    for path, _ in sources:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    sets = [load_sts(path, set_split, mapping) for path, set_split in sources]
    encoder, name = load_model(model), model_reference(model)
    runs = [run_sts(encoder, data, batch_size) for data in sets]
    rows = [(run.data.name, run.result) for run in runs]
    if len(runs) > 1:
        rows.append(("mean", mean_result([run.result for run in runs])))
    if plot:
        from eval.plots import plot_sts_scatter

        plot_sts_scatter(runs, plot, title=name)
    if as_json:
        for run, (path, _) in zip(runs, sources):
            click.echo(json.dumps({**run.result.as_dict(), "data": str(path), "split": run.data.split, "model": name}))
        if len(runs) > 1:
            click.echo(json.dumps({**rows[-1][1].as_dict(), "data": "mean", "model": name}))
        return
    headers = ("data", "spearman", "pearson", "pairs")
    if as_csv:
        click.echo(format_csv(headers, [(label, r.spearman, r.pearson, r.n) for label, r in rows]), nl=False)
        return
    click.echo(f"model: {name}")
    click.echo(format_table(headers, [(label, r.spearman * 100, r.pearson * 100, r.n) for label, r in rows]))


@evaluate.command("retrieval")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--queries", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="Queries: TSV (qid, text) or JSONL.")
@click.option("--qrels", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="Judgements: TREC qrels or TSV (qid, docid, relevance).")
@click.option("--k", "ks", default="1,5,10,100", show_default=True, help="Cut-offs for Recall@k, comma-separated.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@batch_size_option
def eval_retrieval(folder: Path, queries: Path, qrels: Path, ks: str, as_json: bool, batch_size: int) -> None:
    """Recall@k, MRR@10, nDCG@10 and MAP@100 of index DIR on judged queries (computed by trec_eval)."""
    from eval.retrieval import evaluate_retrieval
    from eval.retrieval_data import load_qrels, load_queries
    from eval.tables import format_table
    from index import load_index

    try:
        cutoffs = sorted({int(k) for k in ks.split(",")})
    except ValueError:
        raise UsageError(f"--k must be comma-separated integers, got {ks!r}") from None
    if cutoffs[0] < 1:
        raise UsageError("--k values must be at least 1")
    searcher = load_index(folder)
    result = evaluate_retrieval(searcher, load_queries(queries), load_qrels(qrels), cutoffs, batch_size)
    if as_json:
        click.echo(json.dumps({**result.metrics, "queries": result.queries, "index": str(folder), "model": searcher.manifest.model}))
        return
    click.echo(f"index: {folder} ({searcher.manifest.model}), {result.queries} judged queries")
    click.echo(format_table(("metric", "value"), [(name, f"{value:.4f}") for name, value in result.metrics.items()]))


@evaluate.command("make-stsb-retrieval")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write corpus.jsonl, queries.tsv, qrels.tsv.")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("../shared/data"), show_default=True, help="Folder with stsb-en/ and sick/.")
@click.option("--min-score", type=float, default=4.0, show_default=True, help="A test pair counts as relevant from this gold score on.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def eval_make_stsb_retrieval(output: Path, data_dir: Path, min_score: float, overwrite: bool) -> None:
    """Write a retrieval benchmark from STS-B and SICK: all distinct sentences as corpus, STS-B test pairs ≥ 4.0 as queries/qrels."""
    from eval.stsb_retrieval import build_stsb_retrieval, write_retrieval_set
    from index.atomic import check_target

    check_target(output, overwrite)
    data = build_stsb_retrieval(data_dir, min_score)
    write_retrieval_set(data, output, overwrite)
    judged = sum(len(docs) for docs in data.qrels.values())
    click.echo(f"wrote {output}: {len(data.corpus)} documents, {len(data.queries)} queries, {judged} judgements", err=True)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Markdown file to write; plots go next to it.")
@click.option("--title", default="Results", show_default=True, help="Heading of the report.")
def report(inputs: tuple[Path, ...], output: Path, title: str) -> None:
    """Turn JSON results (files or folders of `eval ... --json` output and benchmark JSON) into markdown tables and plots."""
    from eval.report import write_report

    images = write_report(list(inputs), output, title)
    click.echo(f"wrote {output}" + (f" and {len(images)} plot(s) beside it" if images else ""), err=True)


TRAIN_HELP = """Fine-tune an encoder on TRAIN with METHOD and save it to OUT (a sentence-transformers folder + training.json).

\b
METHOD:
  cosent        scored pairs: STS-B (.tsv.gz, train split), SICK, s1/s2/score TSV/CSV,
                headerless sentence1<TAB>sentence2<TAB>score; graded scores or 0/1 labels.
                CoSENT ranking loss on cosines, scale 20.
  simcse-unsup  unlabeled sentences, one per line (or both columns of a pair file); each
                sentence twice with dropout as noise, in-batch negatives, temperature 0.05.
  simcse-sup    triplets: JSONL {"query", "pos": [...], "neg": [...]}, a 3-column
                anchor/positive/negative TSV, or NLI pairs (SICK: ENTAILMENT -> positive,
                CONTRADICTION -> hard negative of the same premise).

With --dev (STS pairs; a file with a split column gives its dev split), the model is
scored (Spearman) at the start, every --eval-steps (default: each epoch) and at the end,
and the best checkpoint is the one saved. All input is validated before training starts.
"""


@main.command(help=TRAIN_HELP)
@click.argument("method", type=click.Choice(METHODS))
@click.option("--train", "train_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="Training data file.")
@click.option("--dev", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help="STS pairs scored for checkpoint choice.")
@click.option("--base", default=None, help="Model to start from: a local folder, a Hugging Face name, or 'default' (all-MiniLM-L6-v2).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Model folder to create.")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Pairs (or triplets) per step; also the in-batch negatives for SimCSE.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=5e-5, show_default=True, help="Peak learning rate (AdamW, linear warm-up over 10% of steps, then linear decay).")
@click.option("--max-seq-length", type=click.IntRange(min=1), default=None, help="Truncate inputs to this many tokens [default: the base model's].")
@click.option("--pooling", type=click.Choice(POOLINGS), default=None, help="Sentence pooling [default: the base model's].")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed for initialisation, shuffling and dropout.")
@click.option("--eval-steps", type=click.IntRange(min=1), default=None, help="Score --dev every N steps [default: once per epoch].")
@click.option("--max-score", type=click.FloatRange(min=0, min_open=True), default=None, help="cosent: scores are divided by this [default: the largest score in TRAIN].")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT (only once the new model is complete).")
def train(
    method: str, train_path: Path, dev: Path | None, base: str | None, output: Path, epochs: int, batch_size: int, lr: float,
    max_seq_length: int | None, pooling: str | None, seed: int, eval_steps: int | None, max_score: float | None, overwrite: bool,
) -> None:
    import logging

    from embedder.training import TrainConfig
    from embedder.training import train as run_training

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("simsearch.train").setLevel(logging.INFO)
    config = TrainConfig(
        method, train_path, output, dev=dev, base=base, epochs=epochs, batch_size=batch_size, lr=lr, max_seq_length=max_seq_length,
        pooling=pooling, seed=seed, eval_steps=eval_steps, max_score=max_score, overwrite=overwrite,
    )
    run_training(config)


if __name__ == "__main__":
    main()
