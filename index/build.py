"""Build an index folder from a corpus: validate, plan, train on a sample, stream encode+add, tune, write atomically.

Memory stays bounded by one chunk plus the training sample: texts are read
lazily, vectors go chunk by chunk into FAISS (and to a resumable stream file,
see `index.partial`), and the exact neighbours of the held-out tuning queries
are accumulated per chunk instead of keeping all vectors for an exact search.
`--type auto` needs the vectors to choose: it records every chunk first, then
`index.assemble` chooses (index.selection) and builds from the recorded stream.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from common.atomic import check_target, clean_stale, is_own, publish_version, remove_own, writer_folder, writer_lock
from common.chunking import chunks
from common.corpus import CorpusSpec, Document, read_corpus, scan_corpus
from common.encoder import Encoder
from common.measures import StreamingExactTopK
from common.progress import progress_bar
from errors import Interrupted, SimsearchError, UsageError, WriteFailed
from index import lexical
from index.gpu import place
from index.manifest import Manifest
from index.partial import PartialBuild, partial_path
from index.plan import DEFAULT_AUTO_BUDGET, DEFAULT_MAX_MEMORY, DEFAULT_TARGET_RECALL, IndexPlan, check_target_recall, choose_plan, parse_memory, plan_for_type, tuning_query_count
from index.quality import Quality, tune_and_measure
from index.selection import Selection
from index.rescore import RESCORE_TYPES, FloatStore, rescore_multiplier
from index.vectors import VectorIndex

TUNING_K = 10


@dataclass(frozen=True)
class BuildConfig:
    """How to build: batching, index type and the `auto` budget/target, replacement and resumption (the encoder is passed apart)."""

    batch_size: int = 64
    overwrite: bool = False
    show_progress: bool | None = None  # None: only on a terminal
    chunk_size: int = 2048  # documents read, encoded and added per step (and per resumable checkpoint)
    index_type: str = "flat"  # flat, ivf, ivfpq, hnsw, sq8 or auto (see index.plan)
    max_memory: str | int = DEFAULT_MAX_MEMORY
    target_recall: float = DEFAULT_TARGET_RECALL
    resume: bool = False
    gpu: str = "auto"  # auto, off, one, all (see index.gpu)
    seed: int = 0
    lock_timeout: float | None = None  # seconds to wait for another writer of the folder (None: as long as it takes)
    rescore: int | None = None  # keep float vectors and re-score k x this many candidates (0: off; None: 4 for binary types, else off)
    auto_budget: float = DEFAULT_AUTO_BUDGET  # seconds `auto` may spend measuring candidates on a sample (index.selection)


def make_plan(config: BuildConfig, n: int, dim: int) -> IndexPlan | None:
    """The plan for a named type; None for `auto`, which is chosen once the vectors are encoded (`index.assemble.choose_by_measuring`).

    Refuses bad options (--target-recall, --max-memory, --auto-budget, --rescore) before any encoding.
    """
    check_target_recall(config.target_recall)
    budget = parse_memory(config.max_memory)
    if not config.auto_budget >= 0:
        raise UsageError(f"--auto-budget {config.auto_budget}: must be 0 or more seconds")
    if config.index_type == "auto":
        choose_plan(n, dim, budget, config.target_recall)  # refuses a budget no index fits
        return None
    rescore_multiplier(config.index_type, config.rescore)
    return plan_for_type(config.index_type, n, dim, (f"--type {config.index_type}",))


def plan_identity(config: BuildConfig, plan: IndexPlan | None) -> str:
    """What a partial build records as its plan: the FAISS factory, or for `auto` what the choice depends on (the choice itself is saved)."""
    if plan is not None:
        return plan.factory
    return f"auto --max-memory {parse_memory(config.max_memory)} --target-recall {config.target_recall}"


def keep_floats(vectors: VectorIndex, plan: IndexPlan, config: BuildConfig, stream: tuple[np.ndarray, np.ndarray], held_out: np.ndarray) -> None:
    """Give `vectors` the float rows of its documents (a build's stream, `held_out` ids left for their own add) when the build rescores."""
    multiplier = rescore_multiplier(plan.index_type, config.rescore if plan.index_type in RESCORE_TYPES else None)
    if multiplier:
        vectors.floats = FloatStore.of(*stream, keep=~np.isin(stream[1], held_out))
        vectors.apply_search_params({"rescore": multiplier})


def sample_positions(n: int, plan: IndexPlan, seed: int) -> np.ndarray:
    """Corpus positions to encode up front: held-out tuning queries first, then training vectors."""
    wanted = min(n, tuning_query_count(n) + plan.training_size(n))
    return np.random.default_rng(seed).choice(n, size=wanted, replace=False).astype(np.int64)


def encode_sample(corpus: CorpusSpec, positions: np.ndarray, encoder: Encoder, config: BuildConfig) -> tuple[np.ndarray, np.ndarray]:
    """Vectors and ids of the documents at `positions` (in that order), read in one streaming pass."""
    wanted = set(positions.tolist())
    found: dict[int, Document] = {p: d for p, d in enumerate(read_corpus(corpus)) if p in wanted}
    docs = [found[p] for p in positions.tolist()]
    vectors = encoder.encode([d.text for d in docs], config.batch_size, show_progress=config.show_progress)
    return vectors, np.array([d.id for d in docs], dtype=np.int64)


def encode_chunk(encoder: Encoder, chunk: list[Document], first: int, cached: dict[int, np.ndarray], batch_size: int) -> np.ndarray:
    """Vectors of one chunk starting at corpus position `first`; sample documents reuse their cached vector."""
    rows = [cached.get(first + i) for i in range(len(chunk))]
    todo = [i for i, row in enumerate(rows) if row is None]
    fresh = encoder.encode([chunk[i].text for i in todo], batch_size, show_progress=False)
    for i, vector in zip(todo, fresh):
        rows[i] = vector
    return np.stack(rows).astype(np.float32, copy=False)


def build_index(corpus: CorpusSpec, out_dir: Path, encoder: Encoder, config: BuildConfig = BuildConfig()) -> Manifest:
    """Index every document of `corpus`, embedded by `encoder`, into a new folder `out_dir` and return its manifest.

    The corpus is validated in a first cheap pass, so bad input fails before any
    encoding; the folder appears only when complete (built in `.NAME.partial`
    beside it, which `config.resume` continues after an interruption). The
    folder's writer lock is held throughout: an `add` waiting for it then sees
    the new index, and a second build of the same folder waits, then re-checks.
    """
    with building(Path(out_dir), config) as out_dir:
        return _build(corpus, out_dir, encoder, config)


@contextmanager
def building(out_dir: Path, config: BuildConfig) -> Iterator[Path]:
    """Hold the folder's writer lock around a build (any engine) and turn Ctrl-C or a full disk into one-line errors.

    Yields the folder to build (a user's own symlink followed). Inside, the target is
    checked again under the lock and debris of killed writers is removed.
    """
    out_dir = writer_folder(out_dir)
    check_target(out_dir, config.overwrite)
    with writer_lock(out_dir, config.lock_timeout):
        check_target(out_dir, config.overwrite)
        clean_stale(out_dir)
        try:
            yield out_dir
        except KeyboardInterrupt:
            if partial_path(out_dir).is_dir():
                raise Interrupted(f"interrupted: progress kept in {partial_path(out_dir)}; rerun the same command with --resume to continue") from None
            raise
        except (OSError, WriteFailed) as exc:
            if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            if is_own(partial_path(out_dir), out_dir):
                remove_own(partial_path(out_dir))
            reason = f"{exc.filename or out_dir}: {exc.strerror}" if isinstance(exc, OSError) else str(exc)
            raise SimsearchError(f"{reason}; removed the partial build {partial_path(out_dir).name} to free the space") from None


def _build(corpus: CorpusSpec, out_dir: Path, encoder: Encoder, config: BuildConfig) -> Manifest:
    started = time.perf_counter()
    total = scan_corpus(corpus)
    dim, n = encoder.dim, total.documents
    plan = make_plan(config, n, dim)
    stat = corpus.path.stat()
    identity = {
        "corpus": str(corpus.path.resolve()), "corpus_size": stat.st_size, "corpus_mtime_ns": stat.st_mtime_ns,
        "text_column": corpus.text_column, "id_column": corpus.id_column, "format": corpus.format,
        "model": encoder.name, "plan": plan_identity(config, plan), "chunk_size": config.chunk_size, "seed": config.seed,
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = PartialBuild.open(out_dir, identity, dim, config.resume)
    source = {"corpus": str(corpus.path.resolve()), "blank_lines_skipped": total.blank}
    if plan is None:
        return _build_measuring(corpus, out_dir, encoder, config, partial, n, source, started)

    sample = partial.load_sample()
    if sample is None:
        positions = sample_positions(n, plan, config.seed)
        sample = (positions, *encode_sample(corpus, positions, encoder, config))
        partial.save_sample(*sample)
    positions, sample_vectors, sample_ids = sample
    n_queries = min(tuning_query_count(n), len(positions))
    placement = place(plan, config.gpu)
    trained = partial.trained_path()
    if trained is not None:
        vectors = VectorIndex.read(trained.parent, plan.index_type, {}, name=trained.name)
    else:
        vectors = VectorIndex.create(plan, dim)
        if vectors.needs_training():
            train_on = sample_vectors[n_queries:] if len(sample_vectors) > n_queries else sample_vectors
            placement.train(vectors, train_on)
            partial.save_trained(vectors)
    exact = StreamingExactTopK(sample_vectors[:n_queries], TUNING_K + 1)

    cached = dict(zip(positions.tolist(), sample_vectors))
    held_out = sample_ids[:n_queries]

    def add(embedded: np.ndarray, ids: np.ndarray) -> None:
        """Add all but the held-out queries (added after tuning: a query already in an HNSW graph would find its neighbours too easily)."""
        keep = ~np.isin(ids, held_out)
        placement.add(vectors, embedded[keep], ids[keep])
        exact.add(embedded[keep], ids[keep])

    for done_vectors, done_ids in partial.completed_chunks():
        add(done_vectors, done_ids)
    encode_rest(corpus, encoder, config, partial, n, cached, add)
    vectors = placement.to_cpu(vectors)
    keep_floats(vectors, plan, config, partial.stream(), held_out)
    quality = measure(plan, vectors, exact, held_out, config.target_recall)
    vectors.add(sample_vectors[:n_queries], held_out)

    folder = partial.finish()
    vectors.write(folder)
    manifest = describe_build(plan, config, vectors, quality, encoder.name, encoder.describe(), placement.describe(), started, source, partial.store.has_lexical)
    manifest.write(folder)
    publish_version(folder, out_dir)
    return manifest


def encode_rest(
    corpus: CorpusSpec, encoder: Encoder, config: BuildConfig, partial: PartialBuild, n: int, cached: dict[int, np.ndarray],
    add: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> None:
    """Encode the documents after the partial build's last recorded chunk, chunk by chunk: `add` each to the index (if any), then record it."""
    with progress_bar(n, "indexing" if add else "encoding", "doc", config.show_progress, initial=partial.done) as bar:
        documents = read_corpus(corpus)
        for _ in islice(documents, partial.done):
            pass
        for chunk in chunks(documents, config.chunk_size):
            embedded = encode_chunk(encoder, chunk, partial.done, cached, config.batch_size)
            ids = np.fromiter((d.id for d in chunk), dtype=np.int64, count=len(chunk))
            if add:
                add(embedded, ids)
            partial.record_chunk(embedded, ids, chunk)
            bar.update(len(chunk))


def _build_measuring(
    corpus: CorpusSpec, out_dir: Path, encoder: Encoder, config: BuildConfig, partial: PartialBuild, n: int, source: dict, started: float,
) -> Manifest:
    """`--type auto`: encode every document into the partial build, then choose the type on its recorded vectors and assemble (index.assemble)."""
    from index.assemble import assemble_index  # it builds on this module's helpers

    encode_rest(corpus, encoder, config, partial, n, {})
    return assemble_index(partial, out_dir, None, config, encoder.name, encoder.describe(), source, started=started)


def describe_build(
    plan: IndexPlan, config: BuildConfig, vectors, quality: Quality, model: str, provenance: dict, device: str, started: float, source: dict,
    has_lexical: bool, selection: Selection | None = None, **extra,
) -> Manifest:
    """The manifest of a finished build (`vectors`: a VectorIndex or sharded vectors; `has_lexical`: its store has the BM25 index;
    `selection`: what `auto` measured; `extra`: shards, engine)."""
    return Manifest(
        model=model,
        embedding_dim=vectors.dim,
        document_count=int(vectors.live_count),
        index_type=plan.index_type,
        faiss_factory=plan.factory,
        index_params=dict(plan.params),
        search_params={**quality.search_params, **({"rescore": vectors.rescore} if vectors.rescore else {})},
        choice={"requested": config.index_type, "max_memory": parse_memory(config.max_memory), "target_recall": config.target_recall,
                "reasons": list(plan.reasons), "device": device, "build_seconds": round(time.perf_counter() - started, 2),
                **({"auto_budget": config.auto_budget, "selection": selection.as_dict()} if selection else {})},
        quality=quality.as_dict(),
        vector_count=vectors.slots,
        reduction=provenance.get("reduction"),
        backend=provenance.get("backend", "torch"),
        model_fingerprint=provenance.get("fingerprint"),
        source=source,
        lexical=dict(lexical.DESCRIPTION) if has_lexical else {},  # none only when resuming a partial build of an older simsearch
        floats=vectors.floats_description(),
        **extra,
    )


def measure(plan: IndexPlan, vectors: VectorIndex, exact: StreamingExactTopK, self_ids: np.ndarray, target_recall: float) -> Quality:
    """Tune the plan's knob on the held-out queries (not yet in the index; exact neighbours streamed during the build) and time it."""
    return tune_and_measure(
        plan, vectors.apply_search_params, lambda q, k: vectors.search(q, k)[1], exact.queries, self_ids, exact.ids, target_recall, TUNING_K
    )
