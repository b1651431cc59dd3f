"""Ray engine: read a corpus as a Ray Dataset, encode it in an actor pool, and hand the encoded blocks to index/ or to files.

Reading uses the same parsers as the local build (`common.corpus`), one Ray
task per file, so ids, metadata and validation errors are the same. Encoding
runs in a Ray Data actor pool (`map_batches` with `ActorPoolStrategy`): each
actor loads the model once (on its GPU when it was given one). The driver
records every encoded block in the resumable partial build (`index.partial`),
in corpus order, then `index.assemble` trains once on a sample, adds every
block to its shard under its global ids, tunes and writes the folder.
Ray is imported only in this module (the `distributed` extra).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import check_file_target, swap_into_place
from common.chunking import chunks
from common.corpus import CorpusSpec, CorpusStats, Document, is_url, read_corpus
from common.progress import progress_bar
from distributed.local_cluster import started_processes, stop_with_this_process
from distributed.stderr_filter import dropping_expected_ray_line
from embedder.backends import load_encoder
from errors import DataError, SimsearchError, UsageError
from index.assemble import assemble_index
from index.build import BuildConfig, building, make_plan, plan_identity
from index.manifest import Manifest
from index.partial import PartialBuild


CONNECT_TIMEOUT_S = 5.0  # how long `--address` may take to accept a TCP connection


@dataclass(frozen=True)
class RayOptions:
    """Where Ray runs and how wide: cluster address, encoder actors, GPUs per actor, index shards."""

    address: str | None = None  # None: start (or reuse) a local Ray; "auto" or ray://HOST:PORT: join a cluster
    workers: int | None = None  # encoder actors; default: one per GPU when GPUs exist, else one per CPU
    gpus_per_worker: float | None = None  # default: 1 when the cluster has GPUs, else 0
    shards: int = 1


@dataclass(frozen=True)
class CorpusFile:
    """One file of a corpus with its document count and the offset added to its line-number ids."""

    spec: CorpusSpec
    documents: int
    id_offset: int
    identity: str  # size and modification time (or ETag): a resumed build must read the same bytes
    bytes: int


def simsearch_error(exc: BaseException) -> SimsearchError | None:
    """The SimsearchError (bad input) that a Ray task raised, found along the exception's causes."""
    for _ in range(10):  # a RayTaskError(DataError) is itself a DataError: unwrap to the original one
        cause = getattr(exc, "cause", None) or exc.__cause__
        if isinstance(exc, SimsearchError) and not isinstance(cause, SimsearchError):
            return exc
        if cause is None:
            return None
        exc = cause
    return None


def give_local_cluster_a_token() -> None:
    """Token authentication for the local Ray this process starts, with a token held in memory.

    Left alone, Ray (seen in 2.60) saves a token to ~/.ray/auth_token (failing the build when the home
    is read-only) and warns about it on stderr. A fresh random token in RAY_AUTH_TOKEN keeps
    the local cluster authenticated, reaches its workers through their environment, and
    writes nothing to the home. Any RAY_AUTH_* setting of the user's wins.
    """
    if not any(name in os.environ for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's minutes of retries, when nothing listens at `--address` (HOST:PORT or ray://HOST:PORT)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or ("timed out" if isinstance(exc, TimeoutError) else type(exc).__name__)
        raise UsageError(f"--address {address}: nothing answers at {host}:{port} ({reason} within {CONNECT_TIMEOUT_S:g} s); start the cluster or fix the address") from None


def connect(address: str | None) -> dict[str, float]:
    """Join (or start, when `address` is None) a Ray cluster once per process; return its resources."""
    if address is None and "RAY_ADDRESS" not in os.environ and "ray" not in sys.modules:  # Ray reads RAY_AUTH_* on import
        give_local_cluster_a_token()
    import ray

    # Ray's planner sees one input per file and warns that the pool is under-used; the read step splits it into blocks later.
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)
    if not ray.is_initialized():
        if address not in (None, "auto"):
            check_reachable(address)
        before = started_processes() if address is None else None
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        except (ValueError, ConnectionError, RuntimeError) as exc:  # a missing client package, a cluster that refused us
            raise UsageError(f"--address {address}: {first_line(exc)}") from None
        if before is not None:
            stop_with_this_process(before)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # blocks arrive in corpus order: resume counts documents
    context.enable_progress_bars = False  # our own bar counts documents
    # Ray Data's INFO lines (execution plan, "finished in") and its warning that we turned its bars off are not for our users.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    return ray.cluster_resources()


def pool_shape(options: RayOptions, resources: dict[str, float]) -> tuple[int, float]:
    """(actors, GPUs per actor) for the encoder pool; refuses more actors than the cluster can place."""
    gpus = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if resources.get("GPU", 0) else 0.0)
    if gpus > resources.get("GPU", 0):
        raise UsageError(f"--gpus-per-worker {gpus}: the Ray cluster has {resources.get('GPU', 0):g} GPU(s)")
    fit = int(resources.get("GPU", 0) // gpus) if gpus else int(resources.get("CPU", 1))
    workers = options.workers or max(fit, 1)
    if workers > max(fit, 1):
        raise UsageError(f"--workers {workers}: the Ray cluster can place {fit} encoder actor(s) ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs)")
    return workers, gpus


def list_files(location: str) -> list[tuple[str | Path, str]]:
    """(path or URL, identity) of each corpus file: `location` itself, or the files under a folder in name order."""
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(location)
    if not fs.exists(root):
        raise UsageError(f"{location}: no such file or folder")
    names = sorted(p for p in fs.find(root) if not Path(p).name.startswith((".", "_"))) if fs.isdir(root) else [root]
    if not names:
        raise UsageError(f"{location}: folder holds no corpus files")
    found = []
    for name in names:
        info = fs.info(name)
        stamp = info.get("mtime") or info.get("LastModified") or info.get("ETag") or ""
        found.append((fs.unstrip_protocol(name) if is_url(location) else Path(name), f"{info.get('size')}:{stamp}"))
    return found


def scan_file(spec: CorpusSpec) -> tuple[CorpusStats, np.ndarray]:
    """Validate one file (the checks of common.corpus) and return its counts and ids."""
    stats = CorpusStats()
    ids = np.fromiter((doc.id for doc in read_corpus(spec, stats)), dtype=np.int64)
    return stats, ids


def scan_files(location: str, corpus: CorpusSpec) -> tuple[list[CorpusFile], CorpusStats, np.ndarray]:
    """Validate every file in parallel Ray tasks before any encoding; ids must be unique across files.

    Without `--id-column`, several files get line numbers offset by the highest id of the files before.
    """
    import ray

    files = list_files(location)
    specs = [CorpusSpec(path, corpus.text_column, corpus.id_column, corpus.format) for path, _ in files]
    try:
        scanned = ray.get([ray.remote(scan_file).options(num_cpus=1, max_retries=3).remote(spec) for spec in specs])
    except Exception as exc:
        raise simsearch_error(exc) or exc from None
    offset, total, listed, all_ids = 0, CorpusStats(), [], []
    for spec, (identity, (stats, ids)) in zip(specs, zip((i for _, i in files), scanned)):
        shift = offset if corpus.id_column is None and len(files) > 1 else 0
        listed.append(CorpusFile(spec, stats.documents, shift, identity, int(identity.split(":")[0] or 0)))
        all_ids.append(ids + shift)
        offset = max(offset, int(ids.max()) + shift if len(ids) else offset)
        total.documents += stats.documents
        total.blank += stats.blank
    ids = np.concatenate(all_ids)
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) < len(ids):
        twice = int(unique[counts > 1][0])
        where = next(f.spec.path for f, i in zip(listed, all_ids) if twice in i)
        raise DataError(f"{where}: id {twice} appears twice")
    if total.documents == 0:
        raise DataError(f"{location}: no documents to index ({total.blank} blank lines)")
    return listed, total, ids


def read_blocks(batch: dict[str, np.ndarray], text_column: str, id_column: str | None, fmt: str | None, block: int) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data read step: parse the listed files from their `skip`-th document on, `block` documents per output batch."""
    for path, offset, skip in zip(batch["path"], batch["offset"], batch["skip"]):
        spec = CorpusSpec(path if is_url(path) else Path(path), text_column, id_column, fmt)
        for docs in chunks(islice(read_corpus(spec), int(skip), None), block):
            yield {
                "id": np.array([d.id + int(offset) for d in docs], dtype=np.int64),
                "text": np.array([d.text for d in docs], dtype=object),
                "metadata": np.array([json.dumps(d.metadata, ensure_ascii=False) if d.metadata else "" for d in docs], dtype=object),
            }


class EncodeBlocks:
    """Ray Data actor: loads the model once (on its GPU when Ray gave it one) and adds a `vector` column to each block."""

    def __init__(self, model: str | None, backend: str, batch_size: int) -> None:
        import ray

        self.encoder = load_encoder(model, "cuda" if ray.get_gpu_ids() else "cpu", backend)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch["vector"] = self.encoder.encode([str(t) for t in batch["text"]], self.batch_size, show_progress=False)
        batch["pid"] = np.full(len(batch["id"]), os.getpid(), dtype=np.int64)  # which actor encoded it (throughput per worker)
        return batch


def encoded_dataset(files: list[CorpusFile], skip: int, model: str | None, backend: str, batch_size: int, block: int, workers: int, gpus: float):
    """The Ray Dataset of encoded blocks (id, text, metadata, vector, pid), in corpus order, from document `skip` on."""
    import ray

    rows, remaining = [], skip
    for file in files:
        skipped = min(remaining, file.documents)
        remaining -= skipped
        if skipped < file.documents:
            rows.append({"path": str(file.spec.path), "offset": file.id_offset, "skip": skipped})
    spec = files[0].spec
    # Ray Data merges a read task's yields into blocks of up to target_max_block_size bytes: size that to about `block`
    # documents (from the corpus' bytes per document), so blocks spread over the actors instead of one block per file.
    bytes_per_doc = sum(f.bytes for f in files) / max(sum(f.documents for f in files), 1)
    ray.data.DataContext.get_current().target_max_block_size = max(int(bytes_per_doc * block), 256)
    dataset = ray.data.from_items(rows, override_num_blocks=max(len(rows), 1))
    # num_cpus=0: parsing is cheap and must not wait for CPUs held by the encoders (nor fuse into them).
    dataset = dataset.map_batches(read_blocks, batch_size=1, num_cpus=0, fn_kwargs={"text_column": spec.text_column, "id_column": spec.id_column, "fmt": spec.format, "block": block})
    return dataset.map_batches(
        EncodeBlocks, fn_constructor_args=(model, backend, batch_size), batch_size=block, compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1, num_gpus=gpus or None,  # Ray Data's actor pools default to max_restarts=-1, max_task_retries=-1: a killed actor is restarted, its block retried
    )


def check_complete(ids: np.ndarray, expected: np.ndarray) -> None:
    """Every validated id encoded exactly once: nothing lost or duplicated by retries."""
    if len(ids) != len(expected) or not np.array_equal(np.sort(ids), np.sort(expected)):
        lost, extra = np.setdiff1d(expected, ids).size, len(ids) - len(np.unique(ids))
        raise SimsearchError(f"the Ray build lost {lost} and duplicated {extra} document(s); rerun with --resume")


def build_with_ray(location: str, corpus: CorpusSpec, out_dir: Path, model: str | None, backend: str, config: BuildConfig, options: RayOptions) -> Manifest:
    """`simsearch index build --engine ray`: validate, encode in the actor pool, record blocks, assemble one folder or S shards.

    Holds the folder's writer lock throughout, like the local build (`index.build.building`).
    """
    if options.shards < 1:
        raise UsageError(f"--shards must be at least 1, got {options.shards}")
    with building(Path(out_dir), config) as out_dir:
        return _build_with_ray(location, corpus, out_dir, model, backend, config, options)


def _build_with_ray(location: str, corpus: CorpusSpec, out_dir: Path, model: str | None, backend: str, config: BuildConfig, options: RayOptions) -> Manifest:
    started = time.perf_counter()
    workers, gpus = pool_shape(options, connect(options.address))
    files, total, expected = scan_files(location, corpus)
    encoder = load_encoder(model, "cpu", backend)  # the driver's copy only names the model and its dimension
    plan = make_plan(config, total.documents, encoder.dim)
    identity = {
        "corpus": [[str(f.spec.path), f.identity] for f in files], "text_column": corpus.text_column, "id_column": corpus.id_column,
        "format": corpus.format, "model": encoder.name, "plan": plan_identity(config, plan), "chunk_size": config.chunk_size, "seed": config.seed,
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = PartialBuild.open(out_dir, identity, encoder.dim, config.resume)
    resumed_from, encode_started, per_worker = partial.done, time.perf_counter(), {}
    try:
        dataset = encoded_dataset(files, partial.done, model, backend, config.batch_size, config.chunk_size, workers, gpus)
        with dropping_expected_ray_line(), progress_bar(total.documents, "encoding (ray)", "doc", config.show_progress, initial=partial.done) as bar:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                docs = [Document(int(i), str(t), json.loads(m) if m else {}) for i, t, m in zip(batch["id"], batch["text"], batch["metadata"])]
                partial.record_chunk(batch["vector"], batch["id"], docs)
                for pid, count in zip(*np.unique(batch["pid"], return_counts=True)):
                    per_worker[int(pid)] = per_worker.get(int(pid), 0) + int(count)
                bar.update(len(docs))
    except (KeyboardInterrupt, OSError):
        raise  # `building` turns these into one-line errors, keeping the progress for --resume
    except Exception as exc:
        raise simsearch_error(exc) or exc from None
    encode_seconds = time.perf_counter() - encode_started
    check_complete(np.asarray(partial.stream()[1]), expected)
    engine: dict[str, Any] = {
        "name": "ray", "address": options.address or "local", "workers": workers, "gpus_per_worker": gpus, "shards": options.shards,
        "files": len(files), "resumed_from": resumed_from, "encode_seconds": round(encode_seconds, 2),
        "docs_per_second": round((total.documents - resumed_from) / max(encode_seconds, 1e-9), 1), "actors_seen": len(per_worker),
    }
    source = {"corpus": location if is_url(location) else str(Path(location).resolve()), "files": len(files), "blank_lines_skipped": total.blank}
    return assemble_index(partial, out_dir, plan, config, encoder.name, encoder.describe(), source, options.shards, engine, started)


def encode_with_ray(location: str, corpus: CorpusSpec, output: Path, model: str | None, backend: str, batch_size: int, options: RayOptions, overwrite: bool) -> tuple[int, int]:
    """`simsearch encode --engine ray`: OUT.npy (+ OUT.ids.npy, corpus order) or a folder of Parquet shards (id, embedding)."""
    output = Path(output)
    check_file_target(output, overwrite)
    workers, gpus = pool_shape(options, connect(options.address))
    files, total, expected = scan_files(location, corpus)
    dataset = encoded_dataset(files, 0, model, backend, batch_size, 2048, workers, gpus)
    try:
        with dropping_expected_ray_line():
            if output.suffix == ".npy":
                return _write_npy(dataset, output, total.documents, expected)
            return _write_parquet(dataset, output, expected)
    except Exception as exc:
        raise simsearch_error(exc) or exc from None


def _write_npy(dataset, output: Path, n: int, expected: np.ndarray) -> tuple[int, int]:
    """Stream the blocks into a memory-mapped .npy beside `output`, then rename both files into place."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp_vectors, tmp_ids = output.with_name(f".{output.name}.tmp"), output.with_name(f".{output.stem}.ids.npy.tmp")
    vectors = ids = None
    row = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        if vectors is None:
            vectors = np.lib.format.open_memmap(tmp_vectors, mode="w+", dtype=np.float32, shape=(n, batch["vector"].shape[1]))
            ids = np.lib.format.open_memmap(tmp_ids, mode="w+", dtype=np.int64, shape=(n,))
        vectors[row : row + len(batch["id"])], ids[row : row + len(batch["id"])] = batch["vector"], batch["id"]
        row += len(batch["id"])
    check_complete(np.asarray(ids[:row]), expected)
    shape = vectors.shape
    vectors.flush(), ids.flush()
    os.replace(tmp_ids, output.with_name(f"{output.stem}.ids.npy"))
    os.replace(tmp_vectors, output)
    return shape


def _to_arrow(batch: dict[str, np.ndarray]):
    """Parquet rows: id and the embedding as a fixed-size float32 list."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(batch["vector"], dtype=np.float32)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    return pa.table({"id": pa.array(batch["id"], pa.int64()), "embedding": embedding})


def _write_parquet(dataset, output: Path, expected: np.ndarray) -> tuple[int, int]:
    """Parquet shards written by the workers into a temporary folder, checked, then renamed to `output`."""
    import pyarrow.parquet as pq

    work = output.parent / f".{output.name}.partial"
    output.parent.mkdir(parents=True, exist_ok=True)
    dataset.map_batches(_to_arrow, batch_format="numpy", num_cpus=0).write_parquet(str(work.resolve()))
    table = pq.read_table(work, columns=["id"])
    check_complete(table.column("id").to_numpy(), expected)
    dim = pq.read_schema(next(work.glob("*.parquet"))).field("embedding").type.list_size
    swap_into_place(work, output)
    return table.num_rows, dim
