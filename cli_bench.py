"""`simsearch bench encode`: the encoding-backends benchmark on your own model and data (registered in cli.py).

Like cli.py it only parses, calls one library function (simsearch.api.bench_encode) and prints.
"""

from __future__ import annotations

from pathlib import Path

import click

from cli_options import IN_FILE, MODEL_HELP, SimsearchGroup, batch_size_option, corpus_options, json_line
from common.corpus import CorpusSpec
from eval.encode_speed import BENCH_BACKENDS


@click.group(name="bench", cls=SimsearchGroup)
def bench() -> None:
    """Measure speed on this machine: encoding backends on your model and data."""


@bench.command("encode")
@click.option("--model", default=None, help=MODEL_HELP)
@click.option("--backend", "backends", multiple=True, type=click.Choice(BENCH_BACKENDS),
              help="Backend to time; repeat for several [default: all]. st: sentence-transformers' own encode (the speed reference).")
@click.option("--data", type=IN_FILE, default=None, help="Sentences to time (one per line, or TSV/CSV/JSONL) [default: the sentences of --sts].")
@click.option("--sts", default=None, metavar="FILE[:SPLIT]", help="STS pairs (e.g. STS-B, default split test): Spearman per backend, cosines to torch on its sentences.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Time only the first N sentences.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Timed rounds per backend (alternating order; medians reported).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows and settings as one JSON object instead of the table.")
@batch_size_option
@corpus_options
def bench_encode(
    model: str | None, backends: tuple[str, ...], data: Path | None, sts: str | None, limit: int | None, repeats: int, as_json: bool,
    batch_size: int, text_column: str, id_column: str | None, fmt: str | None,
) -> None:
    """Sentences/s, peak RSS, load time and quality of each backend, each in its own process (only encode is timed)."""
    from simsearch.api import bench_encode as run_bench

    spec = CorpusSpec(data, text_column, id_column, fmt) if data is not None else None
    result = run_bench(spec, sts, model, backends or None, batch_size, repeats, limit, log=lambda line: click.echo(line, err=True))
    if as_json:
        json_line(result.as_dict())
        return
    click.echo(result.header())
    click.echo(result.table())
