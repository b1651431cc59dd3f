"""The `simsearch serve` click command: parse options into a `ServeConfig` and call `server.service.run` (light import)."""

from __future__ import annotations

from pathlib import Path

import click

from embedder.backends import BACKENDS
from errors import UsageError
from server.config import API_KEY_ENV, MAX_K, ServeConfig, read_api_key


def parse_size(text: str) -> int:
    """--max-body: bytes, or a size like 1M / 512K / 1MiB."""
    from index.plan import parse_memory

    try:
        return parse_memory(text)
    except UsageError:
        raise UsageError(f"--max-body {text!r}: expected a size like 1M, 512K or 1048576 (bytes)") from None


@click.command(name="serve")
@click.argument("folders", metavar="DIR...", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--rerank-model", "rerankers", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A cross-encoder folder (`simsearch train rerank` makes one) for POST /rerank and /search's \"rerank\"; repeatable, addressed by folder name.")
@click.option("--rerank-backend", type=click.Choice(BACKENDS), default="torch", show_default=True,
              help="Runtime of the --rerank-model cross-encoders (onnx-int8: ONNX Runtime, int8, exported into the folder on first use).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; a non-loopback one needs an API key or --insecure.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: a free one, printed at start).")
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True, help="Most texts per micro-batch (1: batching off).")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Longest a request waits for others to join its batch; never waits when the queue is idle.")
@click.option("--api-key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"File holding the API key (else ${API_KEY_ENV}). With a key every endpoint but /healthz needs 'Authorization: Bearer KEY' and write endpoints are enabled.")
@click.option("--workers-threads", "worker_threads", type=click.IntRange(min=1), default=None, help="torch/FAISS threads for encoding and search [default: all cores].")
@click.option("--max-body", default="1M", show_default=True, help="Largest request body (413 beyond).")
@click.option("--max-queries", type=click.IntRange(min=1), default=256, show_default=True, help="Most texts (queries, inputs, documents) per request.")
@click.option("--max-rerank-pairs", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Most (query, text) pairs one request may have re-scored: /rerank texts, or /search queries × rerank_top.")
@click.option("--max-text-chars", type=click.IntRange(min=1), default=10_000, show_default=True, help="Longest text in characters.")
@click.option("--batch-timeout", "batch_timeout_s", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Seconds before a slow encoder batch fails its requests with 503.")
@click.option("--header-timeout", "header_timeout_s", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Seconds a client may take to send a request's headers (408 and closed beyond: slow-header clients cannot hold connections).")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without an API key.")
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="Encoder runtime for every index [default: each index's own]; indexes with the same model and backend share one encoder.")
@click.option("--engine", type=click.Choice(("local", "ray")), default="local", show_default=True,
              help="local: every index's vectors in this process; ray: each shard of each index a Ray Serve deployment that this server "
                   "fans each query batch out to (pip install 'simsearch[distributed]'; the documents endpoints then answer 405: change the "
                   "folder with `simsearch index add/remove` or a rebuild, and the server reloads it).")
@click.option("--address", default=None, help="Ray: cluster to join, 'auto' or the head's HOST:PORT; every node must read the folders at the same path "
                                              "[default: start a local Ray].")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True, help="Ray: replicas of each shard deployment (Serve restarts a dead one).")
def serve(folders: tuple[Path, ...], api_key_file: Path | None, max_body: str, **options) -> None:
    """Serve index folders DIR... over HTTP: search, encode, OpenAI-compatible embeddings, re-ranking, document updates (docs/serving.md)."""
    from server.config import check_config
    from server.service import run

    config = ServeConfig(folders=folders, api_key=read_api_key(api_key_file), max_body=parse_size(max_body), max_k=MAX_K, **options)
    check_config(config)  # before any model loads: a refused host fails in a second
    run(config)
