"""Reusable click options, parameter types and argument parsers for the `simsearch` commands in cli.py."""

from __future__ import annotations

import functools
import json
import sqlite3
from pathlib import Path

import click

from common.corpus import FORMATS
from embedder.backends import BACKENDS
from embedder.training_methods import POOLINGS, RERANK_LOSSES, SAMPLERS, defaults_help
from errors import SimsearchError, UsageError
from index.fusion import FUSIONS, MODES, RERANK_TOP, RRF_K, SearchOptions
from index.plan import GPU_MODES

MODEL_HELP = "Model: a local folder, a Hugging Face name, or 'default' (all-MiniLM-L6-v2, bundled, offline)."
FORMAT_HELP = "Input format; default from the extension (.txt text, .tsv, .csv, .jsonl)."
IN_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
ENGINES = ("local", "ray")  # distributed.engine.ENGINES, without importing it


class SimsearchGroup(click.Group):
    """A click group that reports SimsearchError as one line instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SimsearchError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:  # the system refused (disk full, read-only, permissions, name too long): one line, exit 1
            if exc.errno is None:
                raise
            click.echo(f"Error: {os_error_line(exc)}", err=True)
            ctx.exit(1)
        except sqlite3.OperationalError as exc:  # SQLite's word for a full or read-only disk
            click.echo(f"Error: SQLite: {exc}", err=True)
            ctx.exit(1)


def os_error_line(exc: OSError) -> str:
    """`FILE: reason` for an error of the operating system."""
    files = " → ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    return f"{files}: {exc.strerror}" if files else str(exc.strerror or exc)


class CountOrWord(click.ParamType):
    """A whole number >= 1, or one word that stands for `meaning`: `--dim K|auto`, `--rescore M|off`."""

    def __init__(self, word: str, meaning: object) -> None:
        self.word, self.meaning, self.name = word, meaning, f"N|{word}"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == self.meaning:
            return value
        if str(value).strip().lower() == self.word:
            return self.meaning
        try:
            number = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a whole number nor {self.word!r}", param, ctx)
        if number < 1:
            self.fail(f"{number}: must be at least 1 (or {self.word})", param, ctx)
        return number


RESCORE = CountOrWord("off", 0)  # --rescore M|off: off is 0


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


def backend_option(default: str | None):
    """--backend: which encoder runtime embeds the text (an index remembers its own)."""
    told = f"[default: {default}]" if default else "[default: the one the index was built with]"
    return click.option("--backend", type=click.Choice(BACKENDS), default=default, help=f"Encoder runtime {told}.")


def lock_timeout_option(func):
    return click.option(
        "--lock-timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
        help="Give up when another writer holds DIR's lock this long [default: wait].",
    )(func)


def batch_size_option(func):
    return click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Sentences per encoder batch.")(func)


def json_line(value) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


def parse_where(conditions: tuple[str, ...]) -> dict[str, str]:
    """FIELD=VALUE strings → {field: value}."""
    parsed: dict[str, str] = {}
    for condition in conditions:
        name, sep, value = condition.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--where {condition!r}: expected FIELD=VALUE")
        parsed[name.strip()] = value
    return parsed


def parse_columns(value: str | None) -> tuple[str, str, str] | None:
    """`--columns s1,s2,score` → a 3-tuple of names."""
    if value is None:
        return None
    names = tuple(part.strip() for part in value.split(","))
    if len(names) != 3 or not all(names):
        raise UsageError(f"--columns needs three names: sentence1,sentence2,score (got {value!r})")
    return names  # type: ignore[return-value]


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
  rerank        a cross-encoder re-ranker (not an encoder) from cosent's scored pairs:
                the pair read together, one score; --loss bce (default) or mse. --base
                a cross-encoder folder, or a bi-encoder whose transformer gets a new head
                (default: all-MiniLM-L6-v2). OUT loads with CrossEncoder(OUT).

--train may repeat: FILE[:SPLIT][@METHOD] trains on FILE's SPLIT (default train; never
test) with METHOD (default: the command's), all sets in one run (--sampler picks batches).

With --dev (STS pairs; a file with a split column gives its dev split), the model is
scored (Spearman) at the start, every --eval-steps (default: each epoch) and at the end,
and the best checkpoint is the one saved. --seeds, --average and --search train several
runs and keep the best on dev; they resume from .OUT.work/ when run again. train rerank
keeps its checkpoints there: --resume continues an interrupted run. All input is
validated before training starts.

\b
Examples:
  simsearch train cosent --train stsb.tsv.gz --train SICK_train.txt@simcse-sup --dev stsb.tsv.gz -o m
  simsearch train cosent --train stsb.tsv.gz --dev stsb.tsv.gz --matryoshka 384,256,128,64 -o m
  simsearch train cosent --train stsb.tsv.gz --dev stsb.tsv.gz --seeds 3 --average -o m
  simsearch train cosent --train stsb.tsv.gz --dev stsb.tsv.gz --search 'lr=3e-5,5e-5 epochs=2,4' -o m
  simsearch train rerank --train stsb.tsv.gz --dev stsb.tsv.gz -o reranker
"""


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
    func = click.option("--dim", type=CountOrWord("auto", "auto"), required=True, help="Output dimension, or 'auto': the smallest sweep dim keeping --target of the full-dim score.")(func)
    return func


def train_options(func):
    """The options of `simsearch train` (everything but METHOD)."""
    func = click.option("--resume", is_flag=True,
                        help="rerank: continue from the last checkpoint (each dev evaluation, else epoch) that an interrupted run of the same command left in .OUT.work/.")(func)
    func = click.option("--overwrite", is_flag=True, help="Replace an existing OUT (only once the new model is complete).")(func)
    func = click.option("--loss", type=click.Choice(RERANK_LOSSES), default=None,
                        help="rerank: bce (BinaryCrossEntropyLoss on scores scaled to [0, 1] or 0/1 labels) or mse (MSELoss on the sigmoid). [default: bce]")(func)
    func = click.option("--trials", type=click.IntRange(min=1), default=None, help="With --search: train only this many settings, drawn from the grid by --seed.")(func)
    func = click.option("--search", default=None, metavar="'KEY=V1,V2 ...'", help="Grid of lr, epochs, batch, seed, pooling, max_seq_length, warmup; the best on --dev is saved.")(func)
    func = click.option("--average", is_flag=True, help="With --seeds: also average the runs' weights (model soup), kept only if it beats every run on --dev.")(func)
    func = click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, help="Train N runs (seeds --seed, +1, ...) and keep the best on --dev.")(func)
    func = click.option("--matryoshka", default=None, metavar="D1,D2,...", help="Also train these output dims (MatryoshkaLoss), e.g. 384,256,128,64; cut later with `reduce truncate`.")(func)
    func = click.option("--sampler", type=click.Choice(SAMPLERS), default="proportional", show_default=True,
                  help="Several --train sets: batches drawn in proportion to set size (all rows used), or round-robin (equal turns, stops when one set runs out).")(func)
    func = click.option("--max-score", type=click.FloatRange(min=0, min_open=True), default=None, help="cosent, angle: scores are divided by this [default: the largest score in TRAIN].")(func)
    func = click.option("--eval-steps", type=click.IntRange(min=1), default=None, help="Score --dev every N steps [default: once per epoch].")(func)
    func = click.option("--seed", type=int, default=42, show_default=True, help="Seed for initialisation, shuffling and dropout.")(func)
    func = click.option("--pooling", type=click.Choice(POOLINGS), default=None, help="Sentence pooling [default: the base model's].")(func)
    func = click.option("--max-seq-length", type=click.IntRange(min=1), default=None, help="Truncate inputs to this many tokens [default: the base model's].")(func)
    func = click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Peak learning rate (AdamW, linear warm-up over 10% of steps, then linear decay) " + defaults_help("lr") + ".")(func)
    func = click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Pairs (or triplets) per step; also the in-batch negatives for SimCSE " + defaults_help("batch_size") + ".")(func)
    func = click.option("--epochs", type=click.IntRange(min=1), default=None, help="Passes over TRAIN " + defaults_help("epochs") + ".")(func)
    func = click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Model folder to create.")(func)
    func = click.option("--base", default=None, help="Model to start from: a local folder, a Hugging Face name, or 'default' (all-MiniLM-L6-v2).")(func)
    func = click.option("--dev", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help="STS pairs scored for checkpoint choice.")(func)
    func = click.option("--train", "train_sets", multiple=True, required=True, metavar="FILE[:SPLIT][@METHOD]", help="Training data; repeat for several sets.")(func)
    return func


def ray_options(engine: str, address: str | None, workers: int | None, gpus_per_worker: float | None, shards: int):
    """The Ray engine's options (a `distributed.engine.RayOptions`), or None for the local engine, which takes none of them."""
    if engine == "local":
        given = [name for name, value in (("--address", address), ("--workers", workers), ("--gpus-per-worker", gpus_per_worker)) if value is not None]
        given += ["--shards"] if shards != 1 else []
        if given:
            raise UsageError(f"{', '.join(given)} only apply with --engine ray")
        return None
    from distributed.engine import RayOptions

    return RayOptions(address, workers, gpus_per_worker, shards)


def engine_options(sharded: bool):
    """--engine local|ray and the Ray options (--shards too when `sharded`), passed to the command as one `ray_options` argument."""

    def decorate(func):
        @functools.wraps(func)
        def command(*args, engine: str, address: str | None, workers: int | None, gpus_per_worker: float | None, shards: int = 1, **kwargs):
            return func(*args, ray_options=ray_options(engine, address, workers, gpus_per_worker, shards), **kwargs)

        if sharded:
            command = click.option("--shards", type=click.IntRange(min=1), default=1, show_default=True,
                                   help="Ray: write S shards searched together (FAISS per shard, top-k merged) instead of one index.")(command)
        command = click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=None, help="Ray: GPUs per encoder actor [default: 1 when the cluster has GPUs, else 0].")(command)
        command = click.option("--workers", type=click.IntRange(min=1), default=None, help="Ray: encoder actors, each loading the model once [default: one per GPU, else per CPU].")(command)
        command = click.option("--address", default=None, help="Ray: cluster to join, 'auto' or ray://HOST:PORT [default: start a local Ray].")(command)
        return click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
                            help="local: this process; ray: Ray Data actor pool (pip install 'simsearch[distributed]'); CORPUS may then be a folder or an fsspec URL.")(command)

    return decorate


class CorpusType(click.ParamType):
    """CORPUS: an existing local file or folder, or an fsspec URL (s3://...) that only --engine ray reads."""

    name = "CORPUS"

    def convert(self, value, param, ctx):
        if "://" not in str(value) and not Path(value).exists():
            self.fail(f"'{value}' does not exist.", param, ctx)
        return str(value)


CORPUS = CorpusType()


rerank_backend_option = click.option(
    "--rerank-backend", type=click.Choice(BACKENDS), default="torch", show_default=True,
    help="Runtime of the re-ranking cross-encoder: torch, or ONNX Runtime (onnx-int8: 1.5x torch on 2 cores, same ranking; exported on first use).",
)


def search_mode_options(func):
    """--mode, --fusion, --rrf-k, --alpha, --candidates, --rerank, --rerank-top, --rerank-weight, --rerank-backend, --rescore (index.fusion.SearchOptions), shared by `query` and `eval retrieval`."""
    options = [
        click.option("--mode", type=click.Choice(MODES), default="auto", show_default=True,
                     help="dense: vectors; lexical: BM25 over the index's lexical index; hybrid: both, fused; "
                          "auto: hybrid with weighted fusion at the index's alpha (0.7 for text without CJK, down to 0.3 for Chinese), "
                          "or dense on an index without a lexical index."),
        click.option("--fusion", type=click.Choice(FUSIONS), default=None,
                     help="How hybrid fuses: rrf (reciprocal rank) or weighted (min-max scaled scores, --alpha on the dense side). "
                          "[default: rrf; weighted under --mode auto]"),
        click.option("--rrf-k", type=click.IntRange(min=1), default=RRF_K, show_default=True, help="The RRF constant: each side adds 1 / (rrf_k + rank)."),
        click.option("--alpha", type=click.FloatRange(0.0, 1.0), default=None,
                     help="--fusion weighted: the dense side's weight (0 to 1). [default: the index's, from the CJK share of its texts]"),
        click.option("--candidates", type=click.IntRange(min=1), default=None, help="hybrid: hits read from each side before fusing [default: max(50, k)]."),
        click.option("--rerank", "rerank", default=None, metavar="DIR",
                     help="Re-order the first --rerank-top hits with this cross-encoder folder (`train rerank` makes one); hits gain rerank_score."),
        click.option("--rerank-top", type=click.IntRange(min=1), default=RERANK_TOP, show_default=True, help="--rerank: first-stage hits it re-orders."),
        click.option("--rerank-weight", type=click.FloatRange(0.0, 1.0), default=1.0, show_default=True,
                     help="--rerank: the cross-encoder's weight in the new order; below 1 its scores are blended with the first stage's "
                          "(each min-max scaled over the N hits). 0.5 suits the re-rankers `train rerank` makes here (docs/benchmarks.md)."),
        rerank_backend_option,
        click.option("--rescore", type=RESCORE, default=None, metavar="M|off",
                     help="An index that keeps float vectors (`index build --rescore`, binary types by default): re-score the top k x M "
                          "candidates by exact cosine; off: the codes' own scores. [default: the index's]"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def search_options(
    mode: str, fusion: str | None, rrf_k: int, alpha: float | None, candidates: int | None, rerank_top: int = RERANK_TOP, rerank_weight: float = 1.0,
    rescore: int | None = None,
) -> SearchOptions:
    """The parsed --mode/--fusion/--rrf-k/--alpha/--candidates/--rerank-top/--rerank-weight/--rescore as one SearchOptions."""
    return SearchOptions(mode, fusion, rrf_k, alpha, candidates, rerank_top, rerank_weight, rescore)
