"""`simsearch` command line: parses arguments, calls one library function per command, prints what it returns.

User mistakes (SimsearchError) become one line on stderr and exit code 1 (bad
data) or 2 (bad usage). Only light modules are imported here, so `--help` is
instant; each command imports the library when it runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli_bench import bench
from cli_models import reduce_group, train
from cli_options import (
    CORPUS, IN_FILE, MODEL_HELP, RESCORE, SimsearchGroup, backend_option, batch_size_option, corpus_options, engine_options, gpu_option, json_line,
    lock_timeout_option, parse_columns, parse_where, search_mode_options, search_options,
)
from common.corpus import CorpusSpec
from embedder.backends import DEFAULT_BACKEND
from errors import UsageError
from index.plan import DEFAULT_AUTO_BUDGET, DEFAULT_MAX_MEMORY, DEFAULT_TARGET_RECALL, INDEX_TYPES
from server.command import serve


@click.group(cls=SimsearchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="simsearch")
def main() -> None:
    """Sentence-embedding retrieval: encode, index with FAISS, query, evaluate."""


@main.command()
@click.argument("input_path", metavar="INPUT", type=CORPUS)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The .npy array to write (Ray: or a folder of Parquet shards).")
@click.option("--model", default=None, help=MODEL_HELP)
@click.option("--overwrite", is_flag=True, help="Replace an existing output file (only once the new one is complete).")
@backend_option(DEFAULT_BACKEND)
@batch_size_option
@corpus_options
@engine_options(sharded=False)
def encode(input_path: str, output: Path, model: str | None, overwrite: bool, backend: str, batch_size: int, text_column: str, id_column: str | None, fmt: str | None, ray_options) -> None:
    """Embed every sentence of INPUT into OUT.npy (float32, one normalized row per sentence, file order; Ray: ids in OUT.ids.npy)."""
    from simsearch.api import encode_file

    rows, dim = encode_file(CorpusSpec(input_path, text_column, id_column, fmt), output, model, batch_size, overwrite, backend, ray_options)
    click.echo(f"wrote {output}: {rows} x {dim} float32", err=True)


@main.group(cls=SimsearchGroup)
def index() -> None:
    """Build and inspect index folders."""


@index.command("build")
@click.argument("corpus", type=CORPUS)
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Index folder to create.")
@click.option("--model", default=None, help=MODEL_HELP)
@backend_option(DEFAULT_BACKEND)
@batch_size_option
@corpus_options
@click.option("--overwrite", is_flag=True, help="Replace an existing index folder (only once the new one is complete).")
@click.option("--type", "index_type", type=click.Choice(INDEX_TYPES), default="flat", show_default=True,
              help="flat: exact; ivf: IVF-Flat; ivfpq: IVF with product-quantized codes (small); hnsw: graph (fast, more memory); "
                   "sq8: exact scan of 8-bit codes; binary: exact Hamming scan of sign bits (32x smaller); binary-hnsw: graph over sign bits; "
                   "auto: each type that fits --max-memory is built on a sample of the encoded corpus and tuned to --target-recall; "
                   "the fastest is built (see --auto-budget; `index info` shows what was measured).")
@click.option("--max-memory", default=DEFAULT_MAX_MEMORY, show_default=True, help="Memory budget for the index (auto), e.g. 2G, 512M.")
@click.option("--target-recall", type=float, default=DEFAULT_TARGET_RECALL, show_default=True,
              help="Recall@10 vs exact search that nprobe/efSearch are tuned to reach on held-out queries.")
@click.option("--auto-budget", type=float, default=DEFAULT_AUTO_BUDGET, show_default=True, metavar="SECONDS",
              help="auto: seconds to spend building and timing the candidate types on a sample of the encoded corpus (after encoding); "
                   "the fastest that reaches --target-recall within --max-memory is built. 0: no measuring, flat.")
@click.option("--rescore", type=RESCORE, default=None, metavar="M|off",
              help="Keep the float32 vectors on disk (memory-mapped, not loaded) and re-score the top k x M candidates by exact cosine. "
                   "Default 4 for binary and binary-hnsw, off for the others; also for sq8, ivf and ivfpq.")
@click.option("--resume", is_flag=True, help="Continue an interrupted build of --output from its last completed chunk.")
@gpu_option
@lock_timeout_option
@engine_options(sharded=True)
def index_build(
    corpus: str, output: Path, model: str | None, backend: str, batch_size: int, text_column: str, id_column: str | None, fmt: str | None,
    overwrite: bool, index_type: str, max_memory: str, target_recall: float, auto_budget: float, rescore: int | None, resume: bool, gpu: str,
    lock_timeout: float | None, ray_options,
) -> None:
    """Embed CORPUS and write an index folder (cosine similarity) to --output.

    Reads, encodes and adds in chunks (memory stays bounded); trained types learn
    from a sample first. An interrupted build keeps its progress in .NAME.partial
    beside --output; rerun with --resume to continue it.
    """
    from index.build import BuildConfig
    from simsearch.api import build

    config = BuildConfig(
        batch_size, overwrite, index_type=index_type, max_memory=max_memory, target_recall=target_recall, resume=resume, gpu=gpu, lock_timeout=lock_timeout,
        rescore=rescore, auto_budget=auto_budget,
    )
    manifest = build(CorpusSpec(corpus, text_column, id_column, fmt), output, config, model, backend, ray_options=ray_options)
    blank = manifest.source.get("blank_lines_skipped", 0)
    click.echo(f"indexed {manifest.document_count} documents ({blank} blank lines skipped) into {output}", err=True)
    click.echo(manifest.explain(), err=True)


@index.command("add")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.argument("corpus", type=IN_FILE)
@batch_size_option
@corpus_options
@click.option("--upsert", is_flag=True, help="Replace documents whose id is already in the index (default: that is an error).")
@backend_option(None)
@lock_timeout_option
def index_add(
    folder: Path, corpus: Path, batch_size: int, text_column: str, id_column: str | None, fmt: str | None, upsert: bool, backend: str | None,
    lock_timeout: float | None,
) -> None:
    """Encode CORPUS with DIR's model and add it to index DIR, atomically; documents without ids get fresh ones after DIR's largest."""
    from simsearch.api import add

    manifest = add(folder, CorpusSpec(corpus, text_column, id_column, fmt), upsert, batch_size, backend=backend, lock_timeout=lock_timeout)
    change = manifest.source["updates"][-1]
    fresh = f" (new ids {change['fresh_ids'][0]}–{change['fresh_ids'][1]})" if "fresh_ids" in change else ""
    click.echo(f"added {change['added']}{fresh}, replaced {change['replaced']}: {folder} now holds {manifest.document_count} documents", err=True)


@index.command("remove")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.argument("ids", metavar="[ID]...", nargs=-1, type=int)
@click.option("--ids-file", type=IN_FILE, help="File with one id per line.")
@lock_timeout_option
def index_remove(folder: Path, ids: tuple[int, ...], ids_file: Path | None, lock_timeout: float | None) -> None:
    """Remove documents by id from index DIR (an id not in the index is an error; nothing changes then).

    On HNSW indexes removed vectors are tombstoned (excluded from every search) and
    the graph is rebuilt from the stored vectors once a quarter of it is tombstones.
    """
    from index.update import read_ids_file
    from simsearch.api import remove

    if bool(ids) == (ids_file is not None):
        raise UsageError("give ids as arguments or --ids-file FILE (exactly one)")
    wanted = list(ids) if ids else read_ids_file(ids_file)
    manifest = remove(folder, wanted, lock_timeout)
    click.echo(f"removed {len(set(wanted))}: {folder} now holds {manifest.document_count} documents", err=True)


@index.command("lexical")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@lock_timeout_option
def index_lexical(folder: Path, lock_timeout: float | None) -> None:
    """Add the lexical (BM25) index to index DIR built by an older simsearch, from its stored texts.

    Indexes built now have one already; this is for folders without it, which
    `--mode lexical` and `--mode hybrid` need. Written as a new version and swapped in
    atomically under the folder's writer lock, like `index add`.
    """
    from simsearch.api import add_lexical

    manifest = add_lexical(folder, lock_timeout)
    click.echo(f"lexical index: {folder} ({manifest.document_count} documents, tokenize '{manifest.lexical['tokenize']}')", err=True)


@index.command("verify")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
def index_verify(folder: Path) -> None:
    """Check index DIR in full: each file against the sha256 its manifest records, SQLite's integrity check, counts."""
    from simsearch.api import verify

    click.echo(f"ok: {folder}: {verify(folder).summary()}", err=True)


@index.command("info")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def index_info(folder: Path, as_json: bool) -> None:
    """Show what an index folder holds (its manifest) and why its type and parameters were chosen."""
    from dataclasses import asdict

    from simsearch.api import info

    manifest = info(folder)
    fields = {**asdict(manifest), "memory": manifest.memory()}
    if as_json:
        click.echo(json.dumps(fields, indent=2, ensure_ascii=False))
        return
    for key, value in fields.items():
        click.echo(f"{key:<18} {json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value}")
    click.echo("")
    click.echo(manifest.explain())


@main.command()
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.argument("text", required=False)
@click.option("--queries", type=IN_FILE, help="File of queries (one per line, or TSV/CSV/JSONL).")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Hits per query.")
@click.option("--json", "as_json", is_flag=True, help='One JSON object per query per line: {"query", "hits": [{"id", "score", "text", ...}]}.')
@batch_size_option
@click.option("--where", "where", multiple=True, metavar="FIELD=VALUE",
              help="Only documents whose metadata FIELD equals VALUE (repeat to AND several). Runs on the CPU index (FAISS ID selector).")
@click.option("--mmap", is_flag=True, help="Memory-map the vectors from disk instead of reading them into memory.")
@click.option("--model", default=None, help="Query with this model instead of the index's own (it must give vectors of the same dimension).")
@backend_option(None)
@gpu_option
@search_mode_options
def query(
    folder: Path, text: str | None, queries: Path | None, k: int, as_json: bool, batch_size: int, where: tuple[str, ...], mmap: bool,
    model: str | None, backend: str | None, gpu: str, mode: str, fusion: str | None, rrf_k: int, alpha: float | None, candidates: int | None,
    rerank: str | None, rerank_top: int, rerank_weight: float, rerank_backend: str, rescore: int | None,
) -> None:
    """Find the K documents of index DIR most similar to TEXT (or to each line of --queries).

    By default (--mode auto) both rankings are fused: the vectors' and BM25's over the
    index's lexical index, weighted as suits the index's language (dense alone on an index
    without a lexical index). --mode dense, lexical or hybrid choose; the --json hits of
    lexical and hybrid searches carry dense_rank and lexical_rank (null where that side did
    not return the document). Scores are cosines (dense), BM25 (lexical) or fused.
    """
    from simsearch.api import query as run_query

    conditions = parse_where(where)
    options = search_options(mode, fusion, rrf_k, alpha, candidates, rerank_top, rerank_weight, rescore)
    result = run_query(folder, text, queries, k, conditions, mmap, gpu, batch_size, model, backend, options, rerank, rerank_backend)
    if result.device != "CPU":
        note = f"search on {result.device}"
        click.echo(note + ("; --where filters run on the CPU index (GPU indexes cannot filter)" if conditions else ""), err=True)
    for query_text, hits in zip(result.queries, result.hits):
        if as_json:
            json_line({"query": query_text, "hits": [h.to_json() for h in hits]})
            continue
        click.echo(f"query: {query_text}")
        for rank, hit in enumerate(hits, start=1):
            reranked = "" if hit.rerank_score is None else f"{hit.rerank_score:.4f}  "
            click.echo(f"{rank:>4}  {reranked}{hit.score:.4f}  [{hit.id}]  {hit.text}")


@main.group(name="eval", cls=SimsearchGroup)
def evaluate() -> None:
    """Measure model and index quality: STS correlations, retrieval metrics, ANN recall."""


@evaluate.command("sts")
@click.option("--data", "datasets", multiple=True, required=True, metavar="FILE[:SPLIT]",
              help="STS-B (en .tsv.gz or zh .data), SICK, or an s1/s2/score TSV/CSV/JSONL; repeat for several sets.")
@click.option("--split", default="test", show_default=True, help="Split for files with a split column (train, dev, test), unless FILE:SPLIT says.")
@click.option("--columns", default=None, metavar="S1,S2,SCORE", help="Column/field names for sentence1, sentence2 and score in your own file.")
@click.option("--model", default=None, help=MODEL_HELP)
@backend_option(DEFAULT_BACKEND)
@click.option("--json", "as_json", is_flag=True, help='One object per set per line: {"spearman", "pearson", "n", "data", "split", "model"}, then a "mean" line for several sets.')
@click.option("--csv", "as_csv", is_flag=True, help="Print the table as CSV.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a PNG: gold score vs cosine per set.")
@batch_size_option
def eval_sts(
    datasets: tuple[str, ...], split: str, columns: str | None, model: str | None, backend: str, as_json: bool, as_csv: bool, plot: Path | None, batch_size: int,
) -> None:
    """Spearman and Pearson correlation between cosine similarity and gold scores, one row per set.

    --model may also be a cross-encoder folder (`train rerank` makes one): each pair is then
    scored read together, so one table compares bi-encoders and cross-encoders.
    """
    from eval.tables import format_csv, format_table
    from simsearch.api import eval_sts as run_eval

    report = run_eval(datasets, split, parse_columns(columns), model, batch_size, plot, backend)
    if as_json:
        for run in report.runs:
            json_line({**run.result.as_dict(), "data": str(run.data.path), "split": run.data.split, "model": report.model, "kind": report.kind})
        if report.mean is not None:
            json_line({**report.mean.as_dict(), "data": "mean", "model": report.model, "kind": report.kind})
        return
    headers = ("data", "spearman", "pearson", "pairs")
    if as_csv:
        click.echo(format_csv(headers, [(label, r.spearman, r.pearson, r.n) for label, r in report.rows()]), nl=False)
        return
    click.echo(f"model: {report.model}" + (" (cross-encoder)" if report.kind == "cross-encoder" else ""))
    click.echo(format_table(headers, [(label, r.spearman * 100, r.pearson * 100, r.n) for label, r in report.rows()]))


@evaluate.command("retrieval")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--queries", type=IN_FILE, required=True, help="Queries: TSV (qid, text) or JSONL.")
@click.option("--qrels", type=IN_FILE, required=True, help="Judgements: TREC qrels or TSV (qid, docid, relevance).")
@click.option("--k", "ks", default="1,5,10,100", show_default=True, help="Cut-offs for Recall@k, comma-separated.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@batch_size_option
@backend_option(None)
@search_mode_options
def eval_retrieval(
    folder: Path, queries: Path, qrels: Path, ks: str, as_json: bool, batch_size: int, backend: str | None,
    mode: str, fusion: str | None, rrf_k: int, alpha: float | None, candidates: int | None, rerank: str | None, rerank_top: int,
    rerank_weight: float, rerank_backend: str, rescore: int | None,
) -> None:
    """Recall@k, MRR@10, nDCG@10 and MAP@100 of index DIR on judged queries (computed by trec_eval)."""
    from eval.tables import format_table
    from simsearch.api import eval_retrieval as run_eval

    try:
        cutoffs = [int(k) for k in ks.split(",")]
    except ValueError:
        raise UsageError(f"--k must be comma-separated integers, got {ks!r}") from None
    options = search_options(mode, fusion, rrf_k, alpha, candidates, rerank_top, rerank_weight, rescore)
    result = run_eval(folder, queries, qrels, cutoffs, batch_size, backend, options, rerank, rerank_backend)
    if result.unknown_docs:
        click.echo(f"warning: {result.unknown_docs} judged document id(s) of {qrels} are not in {folder} (they count as misses)", err=True)
    if as_json:
        json_line({**result.metrics, "queries": result.queries, "index": str(folder), "model": result.model, "mode": result.mode})
        return
    click.echo(f"index: {folder} ({result.model}), {result.mode}, {result.queries} judged queries")
    click.echo(format_table(("metric", "value"), [(name, f"{value:.4f}") for name, value in result.metrics.items()]))


@evaluate.command("ann")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--queries", "n_queries", type=click.IntRange(min=1), default=200, show_default=True, help="How many stored documents to sample as queries.")
@click.option("--query-file", type=IN_FILE, default=None, help="Use these queries instead (one per line, or TSV/CSV/JSONL).")
@click.option("-k", "--k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Recall@k cut-off.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for sampling queries.")
@click.option("--json", "as_json", is_flag=True, help='Print {"ann_recall", "k", "queries", "qps_batch", "qps_single", "index_type", "search_params", "index"}.')
@batch_size_option
@backend_option(None)
def eval_ann(folder: Path, n_queries: int, query_file: Path | None, k: int, seed: int, as_json: bool, batch_size: int, backend: str | None) -> None:
    """Recall@k of index DIR's own search against exact search (re-encodes every stored text once), with QPS."""
    from simsearch.api import eval_ann as run_eval

    result = run_eval(folder, n_queries, query_file, k, seed, batch_size, backend)
    if as_json:
        json_line({**result.as_dict(), "index": str(folder)})
        return
    click.echo(f"index: {folder} ({result.index_type}, {result.search_params or 'default search parameters'})")
    click.echo(f"recall@{k}   {result.ann_recall:.4f} over {result.queries} queries")
    click.echo(f"QPS         {result.qps_batch:,.0f} batched, {result.qps_single:,.0f} one at a time")


@evaluate.command("make-stsb-retrieval")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write corpus.jsonl, queries.tsv, qrels.tsv.")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Folder with stsb-en/stsbenchmark.tsv.gz and sick/SICK_{train,trial}.txt (--lang en) or stsb-zh/STS-B.{train,valid,test}.data (--lang zh).")
@click.option("--min-score", type=float, default=4.0, show_default=True, help="A test pair counts as relevant from this gold score on.")
@click.option("--lang", type=click.Choice(("en", "zh")), default="en", show_default=True, help="en: STS-B and SICK; zh: Chinese STS-B.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def eval_make_stsb_retrieval(output: Path, data_dir: Path, min_score: float, lang: str, overwrite: bool) -> None:
    """Write a retrieval benchmark from STS data: all distinct sentences as corpus, test pairs ≥ 4.0 as queries/qrels (English or Chinese)."""
    from simsearch.api import make_stsb_retrieval

    data = make_stsb_retrieval(output, data_dir, min_score, overwrite, lang)
    judged = sum(len(docs) for docs in data.qrels.values())
    click.echo(f"wrote {output}: {len(data.corpus)} documents, {len(data.queries)} queries, {judged} judgements", err=True)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Markdown file to write; plots go next to it.")
@click.option("--title", default="Results", show_default=True, help="Heading of the report.")
def report(inputs: tuple[Path, ...], output: Path, title: str) -> None:
    """Turn JSON results (files or folders of `eval ... --json` output and benchmark JSON) into markdown tables and plots."""
    from simsearch.api import report as write_report

    images = write_report(list(inputs), output, title)
    click.echo(f"wrote {output}" + (f" and {len(images)} plot(s) beside it" if images else ""), err=True)


main.add_command(train)
main.add_command(reduce_group)
main.add_command(bench)
main.add_command(serve)  # `simsearch serve`: its options live beside the server (server/command.py)

if __name__ == "__main__":
    main()
