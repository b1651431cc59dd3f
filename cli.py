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

from common.corpus import FORMATS, CorpusSpec, read_corpus, scan_corpus
from embedder.pooling import POOLINGS
from embedder.training_methods import METHODS, SAMPLERS, defaults_help
from errors import SimsearchError, UsageError
from index.gpu import GPU_MODES
from index.plan import DEFAULT_MAX_MEMORY, DEFAULT_TARGET_RECALL, INDEX_TYPES

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


def gpu_option(func):
    return click.option(
        "--gpu", type=click.Choice(GPU_MODES), default="auto", show_default=True,
        help="auto: use a GPU when FAISS (or, for exact search, torch) sees one; off; one: the first GPU; all: every GPU (search).",
    )(func)


def explain(manifest) -> str:
    """Why this index: type, factory, parameters, reasons, and the recall@10/QPS measured at build time."""
    from index.plan import format_bytes

    lines = [f"index: {manifest.index_type} ({manifest.faiss_factory})" + (f", params {manifest.index_params}" if manifest.index_params else "")]
    choice = manifest.choice
    if choice:
        asked = f"asked for {choice['requested']}"
        if choice["requested"] == "auto":
            asked += f" with --max-memory {format_bytes(choice['max_memory'])} and --target-recall {choice['target_recall']}"
        lines.append(f"why: {asked}" + "".join(f"\n  - {r}" for r in choice.get("reasons", []) if not r.startswith("--type")))
        lines.append(f"built on: {choice.get('device', 'CPU')} in {choice.get('build_seconds', '?')} s")
    quality = manifest.quality
    if quality:
        tuned = ", ".join(f"{k}={v}" for k, v in quality["search_params"].items()) or "nothing to tune"
        tried = ", ".join(f"{p}→{r:.3f}" for p, r in quality.get("tried", []))
        reached = "reached" if quality["reached"] else "NOT reached (best kept)"
        lines.append(f"search: {tuned}" + (f" (tried {tried})" if tried else ""))
        lines.append(
            f"measured on {quality['queries']} held-out corpus vectors: recall@10 {quality['recall_at_10']:.3f} vs exact "
            f"(target {quality['target_recall']}: {reached}), {quality['qps']:.0f} queries/s in one batch"
        )
    return "\n".join(lines)


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
@click.option("--type", "index_type", type=click.Choice(INDEX_TYPES), default="flat", show_default=True,
              help="flat: exact; ivf: IVF-Flat; ivfpq: IVF with product-quantized codes (small); hnsw: graph (fast, more memory); "
                   "sq8: exact scan of 8-bit codes; auto: chosen from corpus size, dimension, --max-memory and --target-recall.")
@click.option("--max-memory", default=DEFAULT_MAX_MEMORY, show_default=True, help="Memory budget for the index (auto), e.g. 2G, 512M.")
@click.option("--target-recall", type=float, default=DEFAULT_TARGET_RECALL, show_default=True,
              help="Recall@10 vs exact search that nprobe/efSearch are tuned to reach on held-out queries.")
@click.option("--resume", is_flag=True, help="Continue an interrupted build of --output from its last completed chunk.")
@gpu_option
def index_build(
    corpus: Path, output: Path, model: str | None, batch_size: int, text_column: str, id_column: str | None, fmt: str | None, overwrite: bool,
    index_type: str, max_memory: str, target_recall: float, resume: bool, gpu: str,
) -> None:
    """Embed CORPUS and write an index folder (cosine similarity) to --output.

    Reads, encodes and adds in chunks (memory stays bounded); trained types learn
    from a sample first. An interrupted build keeps its progress in .NAME.partial
    beside --output; rerun with --resume to continue it.
    """
    from index import BuildConfig, build_index

    from index.partial import PROGRESS_NAME, partial_path

    config = BuildConfig(model, batch_size, overwrite, index_type=index_type, max_memory=max_memory, target_recall=target_recall, resume=resume, gpu=gpu)
    try:
        manifest = build_index(CorpusSpec(corpus, text_column, id_column, fmt), output, config)
    except KeyboardInterrupt:
        if (partial_path(output) / PROGRESS_NAME).is_file():
            click.echo(f"interrupted: progress kept in {partial_path(output)}; rerun the same command with --resume to continue", err=True)
        raise
    blank = manifest.source.get("blank_lines_skipped", 0)
    click.echo(f"indexed {manifest.document_count} documents ({blank} blank lines skipped) into {output}", err=True)
    click.echo(explain(manifest), err=True)


@index.command("add")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.argument("corpus", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@batch_size_option
@corpus_options
@click.option("--upsert", is_flag=True, help="Replace documents whose id is already in the index (default: that is an error).")
def index_add(folder: Path, corpus: Path, batch_size: int, text_column: str, id_column: str | None, fmt: str | None, upsert: bool) -> None:
    """Encode CORPUS with DIR's model and add it to index DIR (texts and vectors change together, atomically)."""
    from index.update import add_documents

    manifest = add_documents(folder, CorpusSpec(corpus, text_column, id_column, fmt), upsert, batch_size)
    change = manifest.source["updates"][-1]
    click.echo(f"added {change['added']}, replaced {change['replaced']}: {folder} now holds {manifest.document_count} documents", err=True)


@index.command("remove")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.argument("ids", metavar="[ID]...", nargs=-1, type=int)
@click.option("--ids-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="File with one id per line.")
def index_remove(folder: Path, ids: tuple[int, ...], ids_file: Path | None) -> None:
    """Remove documents by id from index DIR (an id not in the index is an error; nothing changes then).

    On HNSW indexes removed vectors are tombstoned (excluded from every search) and
    the graph is rebuilt from the stored vectors once a quarter of it is tombstones.
    """
    from index.update import read_ids_file, remove_documents

    if bool(ids) == (ids_file is not None):
        raise UsageError("give ids as arguments or --ids-file FILE (exactly one)")
    wanted = list(ids) if ids else read_ids_file(ids_file)
    manifest = remove_documents(folder, wanted)
    click.echo(f"removed {len(set(wanted))}: {folder} now holds {manifest.document_count} documents", err=True)


@index.command("info")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def index_info(folder: Path, as_json: bool) -> None:
    """Show what an index folder holds (its manifest) and why its type and parameters were chosen."""
    from dataclasses import asdict

    from index import Manifest

    manifest = Manifest.read(folder)
    fields = asdict(manifest)
    if as_json:
        click.echo(json.dumps(fields, indent=2, ensure_ascii=False))
        return
    for key, value in fields.items():
        click.echo(f"{key:<18} {json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value}")
    click.echo("")
    click.echo(explain(manifest))


@main.command()
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.argument("text", required=False)
@click.option("--queries", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="File of queries (one per line, or TSV/CSV/JSONL).")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Hits per query.")
@click.option("--json", "as_json", is_flag=True, help='One JSON object per query per line: {"query", "hits": [{"id", "score", "text", ...}]}.')
@batch_size_option
@click.option("--where", "where", multiple=True, metavar="FIELD=VALUE",
              help="Only documents whose metadata FIELD equals VALUE (repeat to AND several). Runs on the CPU index (FAISS ID selector).")
@click.option("--mmap", is_flag=True, help="Memory-map the vectors from disk instead of reading them into memory.")
@gpu_option
def query(folder: Path, text: str | None, queries: Path | None, k: int, as_json: bool, batch_size: int, where: tuple[str, ...], mmap: bool, gpu: str) -> None:
    """Find the K documents of index DIR most similar to TEXT (or to each line of --queries)."""
    from index import load_index

    if (text is None) == (queries is None):
        raise UsageError("give either a query TEXT or --queries FILE (exactly one)")
    texts = [text] if text is not None else [doc.text for doc in read_corpus(CorpusSpec(queries))]
    if not texts or not all(t.strip() for t in texts):
        raise UsageError("the query is empty")
    conditions = parse_where(where)
    searcher = load_index(folder, mmap=mmap, gpu=gpu)
    if searcher.device != "CPU":
        note = f"search on {searcher.device}"
        click.echo(note + ("; --where filters run on the CPU index (GPU indexes cannot filter)" if conditions else ""), err=True)
    found = searcher.search(texts, k, batch_size, where=conditions)
    for query_text, hits in zip(texts, found):
        if as_json:
            click.echo(json.dumps({"query": query_text, "hits": [h.to_json() for h in hits]}, ensure_ascii=False))
            continue
        click.echo(f"query: {query_text}")
        for rank, hit in enumerate(hits, start=1):
            click.echo(f"{rank:>4}  {hit.score:.4f}  [{hit.id}]  {hit.text}")


def parse_where(conditions: tuple[str, ...]) -> dict[str, str]:
    """FIELD=VALUE strings → {field: value}."""
    parsed: dict[str, str] = {}
    for condition in conditions:
        name, sep, value = condition.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--where {condition!r}: expected FIELD=VALUE")
        parsed[name.strip()] = value
    return parsed


@main.group(name="eval", cls=SimsearchGroup)
def evaluate() -> None:
    """Measure model and index quality: STS correlations, retrieval metrics, ANN recall."""


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


@evaluate.command("ann")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--queries", "n_queries", type=click.IntRange(min=1), default=200, show_default=True, help="How many stored documents to sample as queries.")
@click.option("--query-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help="Use these queries instead (one per line, or TSV/CSV/JSONL).")
@click.option("-k", "--k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Recall@k cut-off.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for sampling queries.")
@click.option("--json", "as_json", is_flag=True, help='Print {"ann_recall", "k", "queries", "qps_batch", "qps_single", "index_type", "search_params", "index"}.')
@batch_size_option
def eval_ann(folder: Path, n_queries: int, query_file: Path | None, k: int, seed: int, as_json: bool, batch_size: int) -> None:
    """Recall@k of index DIR's own search against exact search (re-encodes every stored text once), with QPS."""
    from eval.ann import evaluate_ann
    from index import load_index

    texts = [doc.text for doc in read_corpus(CorpusSpec(query_file))] if query_file else None
    result = evaluate_ann(load_index(folder), n_queries, k, texts, seed, batch_size)
    if as_json:
        click.echo(json.dumps({**result.as_dict(), "index": str(folder)}))
        return
    click.echo(f"index: {folder} ({result.index_type}, {result.search_params or 'default search parameters'})")
    click.echo(f"recall@{k}   {result.ann_recall:.4f} over {result.queries} queries")
    click.echo(f"QPS         {result.qps_batch:,.0f} batched, {result.qps_single:,.0f} one at a time")


@evaluate.command("make-stsb-retrieval")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write corpus.jsonl, queries.tsv, qrels.tsv.")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("../shared/data"), show_default=True, help="Folder with stsb-en/ and sick/.")
@click.option("--min-score", type=float, default=4.0, show_default=True, help="A test pair counts as relevant from this gold score on.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def eval_make_stsb_retrieval(output: Path, data_dir: Path, min_score: float, overwrite: bool) -> None:
    """Write a retrieval benchmark from STS-B and SICK: all distinct sentences as corpus, STS-B test pairs ≥ 4.0 as queries/qrels."""
    from eval.stsb_retrieval import build_stsb_retrieval, write_retrieval_set
    from common.atomic import check_target

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
  angle         the same scored pairs; AnglE: CoSENT (cosine) + AnglELoss (angle) +
                in-batch negatives among the pairs scored >= 0.8 of the maximum.
  simcse-unsup  unlabeled sentences, one per line (or both columns of a pair file); each
                sentence twice with dropout as noise, in-batch negatives, temperature 0.05.
  simcse-sup    triplets: JSONL {"query", "pos": [...], "neg": [...]}, a 3-column
                anchor/positive/negative TSV, or NLI pairs (SICK: ENTAILMENT -> positive,
                CONTRADICTION -> hard negative of the same premise).

--train may repeat: FILE[:SPLIT][@METHOD] trains on FILE's SPLIT (default train; never
test) with METHOD (default: the command's), all sets in one run (--sampler picks batches).

With --dev (STS pairs; a file with a split column gives its dev split), the model is
scored (Spearman) at the start, every --eval-steps (default: each epoch) and at the end,
and the best checkpoint is the one saved. --seeds, --average and --search train several
runs and keep the best on dev; they resume from .OUT.work/ when run again. All input is
validated before training starts.

\b
Examples:
  simsearch train cosent --train stsb.tsv.gz --train SICK_train.txt@simcse-sup --dev stsb.tsv.gz -o m
  simsearch train cosent --train stsb.tsv.gz --dev stsb.tsv.gz --matryoshka 384,256,128,64 -o m
  simsearch train cosent --train stsb.tsv.gz --dev stsb.tsv.gz --seeds 3 --average -o m
  simsearch train cosent --train stsb.tsv.gz --dev stsb.tsv.gz --search 'lr=3e-5,5e-5 epochs=2,4' -o m
"""


@main.command(help=TRAIN_HELP)
@click.argument("method", type=click.Choice(METHODS))
@click.option("--train", "train_sets", multiple=True, required=True, metavar="FILE[:SPLIT][@METHOD]", help="Training data; repeat for several sets.")
@click.option("--dev", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help="STS pairs scored for checkpoint choice.")
@click.option("--base", default=None, help="Model to start from: a local folder, a Hugging Face name, or 'default' (all-MiniLM-L6-v2).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Model folder to create.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Passes over TRAIN " + defaults_help("epochs") + ".")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Pairs (or triplets) per step; also the in-batch negatives for SimCSE " + defaults_help("batch_size") + ".")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Peak learning rate (AdamW, linear warm-up over 10% of steps, then linear decay) " + defaults_help("lr") + ".")
@click.option("--max-seq-length", type=click.IntRange(min=1), default=None, help="Truncate inputs to this many tokens [default: the base model's].")
@click.option("--pooling", type=click.Choice(POOLINGS), default=None, help="Sentence pooling [default: the base model's].")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed for initialisation, shuffling and dropout.")
@click.option("--eval-steps", type=click.IntRange(min=1), default=None, help="Score --dev every N steps [default: once per epoch].")
@click.option("--max-score", type=click.FloatRange(min=0, min_open=True), default=None, help="cosent, angle: scores are divided by this [default: the largest score in TRAIN].")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="proportional", show_default=True,
              help="Several --train sets: batches drawn in proportion to set size (all rows used), or round-robin (equal turns, stops when one set runs out).")
@click.option("--matryoshka", default=None, metavar="D1,D2,...", help="Also train these output dims (MatryoshkaLoss), e.g. 384,256,128,64; cut later with `reduce truncate`.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, help="Train N runs (seeds --seed, +1, ...) and keep the best on --dev.")
@click.option("--average", is_flag=True, help="With --seeds: also average the runs' weights (model soup), kept only if it beats every run on --dev.")
@click.option("--search", default=None, metavar="'KEY=V1,V2 ...'", help="Grid of lr, epochs, batch, seed, pooling, max_seq_length, warmup; the best on --dev is saved.")
@click.option("--trials", type=click.IntRange(min=1), default=None, help="With --search: train only this many settings, drawn from the grid by --seed.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT (only once the new model is complete).")
def train(
    method: str, train_sets: tuple[str, ...], dev: Path | None, base: str | None, output: Path, epochs: int | None, batch_size: int | None, lr: float | None,
    max_seq_length: int | None, pooling: str | None, seed: int, eval_steps: int | None, max_score: float | None, sampler: str, matryoshka: str | None,
    seeds: int, average: bool, search: str | None, trials: int | None, overwrite: bool,
) -> None:
    import logging

    from embedder.training import TrainConfig, parse_dims
    from embedder.training_runs import RunPlan, run_plan

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("simsearch.train").setLevel(logging.INFO)
    config = TrainConfig(
        method, train_sets, output, dev=dev, base=base, epochs=epochs, batch_size=batch_size, lr=lr, max_seq_length=max_seq_length,
        pooling=pooling, seed=seed, eval_steps=eval_steps, max_score=max_score, sampler=sampler,
        matryoshka=parse_dims(matryoshka) if matryoshka else (), overwrite=overwrite,
    )
    run_plan(config, RunPlan(seeds, average, search, trials))


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


@reduce_group.command("truncate")
@click.argument("model")
@click.option("--dim", type=click.IntRange(min=1), required=True, help="Keep the first K dims (best for a model trained with --matryoshka at K).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for the reduced model.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT folder (only once the new one is complete).")
def reduce_truncate(model: str, dim: int, output: Path, overwrite: bool) -> None:
    """Truncate MODEL's vectors to their first K dims (a Dense identity slice, then Normalize), saved to OUT."""
    from embedder.reduce_model import ReduceConfig, reduce_model

    info = reduce_model(model, output, ReduceConfig(method="truncate", dim=dim, overwrite=overwrite)).info
    trained = info["matryoshka_dims"]
    note = f"trained with Matryoshka at {trained}" if trained else "not trained with --matryoshka: expect a larger loss than at trained dims"
    if trained and dim not in trained:
        note += f"; {dim} is not one of them"
    click.echo(f"wrote {output}: truncate {info['input_dim']} → {info['output_dim']} dims ({note})", err=True)


@reduce_group.command("sweep")
@click.argument("model")
@click.option("--fit", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="Unlabeled corpus: whitening is fitted on it and recall@10 measured on it.")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="STS file for Spearman, e.g. STS-B.")
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
        from eval.plots import plot_sweep

        plot_sweep([r.as_dict() for r in result.rows], plot, f"{model} · {pairs.name}")
        click.echo(f"wrote {plot}", err=True)


if __name__ == "__main__":
    main()
