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


if __name__ == "__main__":
    main()
