"""The Python API behind every `simsearch` command: load what a command needs, call the stage, return a result.

This is the one place that combines stages: it loads an encoder (embedder/) and
hands it to an index (index/) or a measure (eval/). The CLI parses arguments,
calls one function here (or one stage function directly) and prints the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_file, check_file_target, check_output_place, check_target, naming
from common.corpus import CorpusSpec, is_url, read_corpus, scan_corpus
from common.encoder import Encoder
from common.sts_data import load_sts, parse_data_arg
from embedder.backends import DEFAULT_BACKEND, load_encoder
from embedder.model_files import legacy_model_fingerprint
from errors import UsageError
from index.build import BuildConfig, build_index
from index.integrity import Verified, verify_index
from index.fusion import SearchOptions
from index.manifest import Manifest
from index.search import Hit, SearchIndex, VectorOpener, Where, load_index, unknown_fields
from index.update import add_documents, add_lexical_index, remove_documents

PathLike = str | Path


def _corpus(corpus: CorpusSpec | PathLike, ray_options: Any = None) -> CorpusSpec:
    """A corpus spec from a spec or a bare path (format from the extension, default columns); fsspec URLs only for the Ray engine."""
    spec = corpus if isinstance(corpus, CorpusSpec) else CorpusSpec(corpus)
    if is_url(spec.path) and ray_options is None:
        raise UsageError(f"{spec.path}: URLs and folders are read by --engine ray; the local engine reads one local file")
    return spec if is_url(spec.path) else replace(spec, path=Path(spec.path))


def encode_file(
    corpus: CorpusSpec | PathLike, output: PathLike, model: str | None = None, batch_size: int = 64,
    overwrite: bool = False, backend: str = DEFAULT_BACKEND, ray_options: Any = None,
) -> tuple[int, int]:
    """Embed every sentence of `corpus` into the .npy file `output` (float32, normalized rows, file order); returns its shape.

    With `ray_options` (a `distributed.engine.RayOptions`) the Ray engine encodes, writing ids beside the .npy or Parquet shards.
    """
    spec, output = _corpus(corpus, ray_options), Path(output)
    if ray_options is not None:
        from distributed.engine import encode_with_ray

        return encode_with_ray(str(spec.path), spec, output, model, backend, batch_size, ray_options, overwrite)
    check_file_target(output, overwrite)
    if not output.parent.is_dir():
        raise UsageError(f"{output}: folder {output.parent} does not exist")
    scan_corpus(spec)
    texts = [doc.text for doc in read_corpus(spec)]
    vectors = load_encoder(model, backend=backend).encode(texts, batch_size)
    with atomic_file(output) as handle:
        np.save(handle, vectors)
    return vectors.shape


def build(
    corpus: CorpusSpec | PathLike, output: PathLike, config: BuildConfig = BuildConfig(), model: str | None = None,
    backend: str = DEFAULT_BACKEND, encoder: Encoder | None = None, ray_options: Any = None,
) -> Manifest:
    """Embed `corpus` with `model` (or a ready `encoder`) and write an index folder to `output`.

    With `ray_options` (a `distributed.engine.RayOptions`) the Ray engine encodes in an actor pool and may write shards.
    """
    check_target(Path(output), config.overwrite)  # before the model loads: a bad output fails in a second
    spec = _corpus(corpus, ray_options)
    if ray_options is not None:
        from distributed.engine import build_with_ray

        return build_with_ray(str(spec.path), spec, Path(output), model, backend, config, ray_options)
    return build_index(spec, Path(output), encoder or load_encoder(model, backend=backend), config)


def index_encoder(manifest: Manifest, model: str | None = None, backend: str | None = None) -> Encoder:
    """The encoder for an index: its manifest's model and backend unless told otherwise.

    An index built by an older simsearch records a fingerprint of another scheme
    (index.search.check_encoder compares only fingerprints of one scheme): it is
    checked here, against the model folder fingerprinted the old way.
    """
    encoder = load_encoder(model or manifest.model, backend=backend or manifest.backend)
    recorded = manifest.model_fingerprint
    if recorded and ":" not in recorded and encoder.name == manifest.model:
        now = legacy_model_fingerprint(manifest.model)
        if now is not None and now != recorded:
            raise UsageError(
                f"{manifest.model}: the model changed since an index was built with it (fingerprint {now[:12]}, manifest {recorded[:12]}); "
                "restore that model or rebuild the index"
            )
    return encoder


def add(
    folder: PathLike, corpus: CorpusSpec | PathLike, upsert: bool = False, batch_size: int = 64, encoder: Encoder | None = None,
    backend: str | None = None, lock_timeout: float | None = None,
) -> Manifest:
    """Encode `corpus` with the index's own model (and backend, unless told) and add it to the index folder (atomically, under its writer lock)."""
    folder = Path(folder)
    refuse_sharded(folder)
    encoder = encoder or index_encoder(Manifest.read(folder), backend=backend)
    return add_documents(folder, _corpus(corpus), encoder, upsert, batch_size, lock_timeout=lock_timeout)


def refuse_sharded(folder: Path) -> None:
    """Updates work on one vectors.faiss; a sharded folder is rebuilt instead."""
    if Manifest.read(folder).shards:
        raise UsageError(f"{folder}: a sharded index cannot be updated in place; rebuild it with the new corpus")


def remove(folder: PathLike, ids: Sequence[int], lock_timeout: float | None = None) -> Manifest:
    """Remove documents by id (an id not in the index is an error and nothing changes)."""
    refuse_sharded(Path(folder))
    return remove_documents(Path(folder), ids, lock_timeout)


def add_lexical(folder: PathLike, lock_timeout: float | None = None) -> Manifest:
    """Give an index folder built before lexical search existed its BM25 index (no change to a folder that has one)."""
    return add_lexical_index(Path(folder), lock_timeout)


def verify(folder: PathLike) -> Verified:
    """Check an index folder in full: every file against its recorded sha256, SQLite's integrity, counts."""
    return verify_index(Path(folder))


def info(folder: PathLike) -> Manifest:
    """The manifest of an index folder (`Manifest.explain()` says why its type and parameters were chosen)."""
    return Manifest.read(Path(folder))


def open_index(
    folder: PathLike, model: str | None = None, mmap: bool = False, gpu: str = "auto", backend: str | None = None, encoder: Encoder | None = None,
    dense: bool = True, open_vectors: VectorOpener | None = None,
) -> SearchIndex:
    """Load an index folder with an encoder for text queries (by default the model and backend it was built with; none when not `dense`);
    `open_vectors` holds its vectors elsewhere (index.search.load_index)."""
    folder = Path(folder)
    if dense and encoder is None:
        encoder = index_encoder(Manifest.read(folder), model, backend)
    return load_index(folder, encoder, mmap=mmap, gpu=gpu, open_vectors=open_vectors)


@dataclass(frozen=True)
class QueryResult:
    """The query texts, their hits (one list per query), and where the search ran."""

    queries: list[str]
    hits: list[list[Hit]]
    device: str


def read_queries(text: str | Sequence[str] | None, queries_file: PathLike | None) -> list[str]:
    """Query texts from a text (or list of texts) or a file (one per line, or TSV/CSV/JSONL): exactly one of them."""
    if (text is None) == (queries_file is None):
        raise UsageError("give either a query TEXT or --queries FILE (exactly one)")
    if queries_file is not None:
        texts = [doc.text for doc in read_corpus(CorpusSpec(Path(queries_file)))]
    else:
        texts = [text] if isinstance(text, str) else list(text)
    if not texts or not all(t.strip() for t in texts):
        raise UsageError("the query is empty")
    return texts


def query(
    folder: PathLike, text: str | Sequence[str] | None = None, queries_file: PathLike | None = None, k: int = 10, where: Where | None = None,
    mmap: bool = False, gpu: str = "auto", batch_size: int = 64, model: str | None = None, backend: str | None = None,
    options: SearchOptions = SearchOptions(), rerank: str | None = None, rerank_backend: str = DEFAULT_BACKEND,
) -> QueryResult:
    """The k documents of an index most similar to each query text (auto, dense, lexical or hybrid: `options`), re-ordered by
    the cross-encoder folder `rerank` (on `rerank_backend`) when given (its first `options.rerank_top`)."""
    texts = read_queries(text, queries_file)
    reranker = _reranker(rerank, rerank_backend)
    searcher = open_index(folder, model, mmap, gpu, backend, dense=options.mode != "lexical")
    problem = unknown_fields(where, searcher.store.metadata_fields(), Path(folder).name) if where else None
    if problem:
        raise UsageError(f"--where: {problem}")
    return QueryResult(texts, searcher.search(texts, k, batch_size, where=where, options=options, reranker=reranker), searcher.device)


def _reranker(folder: str | None, backend: str):
    """The cross-encoder of `--rerank FOLDER` on `backend` (loaded before the index, so a wrong folder fails first), or None."""
    from embedder.reranking import load_reranker

    return load_reranker(folder, backend) if folder is not None else None


def eval_sts(
    datasets: Sequence[PathLike], split: str = "test", columns: tuple[str, str, str] | None = None, model: str | None = None,
    batch_size: int = 64, plot: PathLike | None = None, backend: str = DEFAULT_BACKEND,
):
    """Spearman/Pearson of cosine (a cross-encoder folder: its pair scores) vs gold on each STS set (`FILE` or `FILE:SPLIT`), optionally a PNG."""
    from embedder.reranking import is_cross_encoder, load_reranker
    from eval.sts import sts_report

    sources = [parse_data_arg(str(value), split) for value in datasets]
    for path, _ in sources:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    sets = [load_sts(path, set_split, columns) for path, set_split in sources]
    scorer = load_reranker(model, backend) if model and is_cross_encoder(model) else load_encoder(model, backend=backend)
    report_ = sts_report(scorer, sets, batch_size)
    if plot is not None:
        from eval.plots import plot_sts_scatter

        plot_sts_scatter(report_.runs, Path(plot), title=report_.model)
    return report_


def eval_retrieval(
    folder: PathLike, queries: PathLike, qrels: PathLike, ks: Sequence[int] = (1, 5, 10, 100), batch_size: int = 64, backend: str | None = None,
    options: SearchOptions = SearchOptions(), rerank: str | None = None, rerank_backend: str = DEFAULT_BACKEND,
):
    """Recall@k, MRR@10, nDCG@10, MAP@100 of an index on judged queries (trec_eval's measures; the index's backend unless told;
    re-ranked by the cross-encoder folder `rerank` on `rerank_backend` when given)."""
    from eval.retrieval import evaluate_retrieval
    from eval.retrieval_data import load_qrels, load_queries

    if not ks or min(ks) < 1:
        raise UsageError("--k values must be at least 1")
    reranker = _reranker(rerank, rerank_backend)
    searcher = open_index(folder, backend=backend, dense=options.mode != "lexical")
    return evaluate_retrieval(searcher, load_queries(queries), load_qrels(qrels), sorted(set(ks)), batch_size, options, reranker)


def eval_ann(
    folder: PathLike, n_queries: int = 200, query_file: PathLike | None = None, k: int = 10, seed: int = 0, batch_size: int = 64,
    backend: str | None = None,
):
    """An index's recall@k against exact search over its re-encoded texts (index's backend unless told), and its QPS."""
    from eval.ann import evaluate_ann

    texts = [doc.text for doc in read_corpus(CorpusSpec(Path(query_file)))] if query_file else None
    return evaluate_ann(open_index(folder, backend=backend), n_queries, k, texts, seed, batch_size)


def bench_encode(
    data: CorpusSpec | PathLike | None = None, sts: str | None = None, model: str | None = None, backends: Sequence[str] | None = None,
    batch_size: int = 64, repeats: int = 3, limit: int | None = None, work: PathLike | None = None, log=None,
):
    """Encoding speed, peak RSS and quality per backend on `data`'s texts (or the sentences of `sts`, FILE[:SPLIT])."""
    import tempfile

    from eval.encode_speed import BENCH_BACKENDS, BenchConfig, run_bench

    if data is None and sts is None:
        raise UsageError("give --data FILE (sentences to time), --sts FILE[:SPLIT] (pairs for Spearman), or both")
    pairs = None
    if sts is not None:
        path, split = parse_data_arg(str(sts), "test")
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        pairs = load_sts(path, split)
    if data is not None:
        spec = _corpus(data)
        scan_corpus(spec)
        texts = [doc.text for doc in read_corpus(spec)]
    else:
        texts = pairs.distinct()[0]
    with tempfile.TemporaryDirectory(prefix="simsearch-bench-") as scratch:
        config = BenchConfig(Path(work or scratch), model, tuple(backends or BENCH_BACKENDS), batch_size, repeats)
        return run_bench(texts[:limit], config, pairs, log)


def make_stsb_retrieval(output: PathLike, data_dir: PathLike, min_score: float = 4.0, overwrite: bool = False, lang: str = "en"):
    """Write the STS-B/SICK (`en`) or Chinese STS-B (`zh`) retrieval set (corpus.jsonl, queries.tsv, qrels.tsv) from `data_dir`."""
    from eval.stsb_retrieval import build_stsb_retrieval, write_retrieval_set

    check_target(Path(output), overwrite)
    data = build_stsb_retrieval(Path(data_dir), min_score, lang)
    write_retrieval_set(data, Path(output), overwrite)
    return data


def report(inputs: Sequence[PathLike], output: PathLike, title: str = "Results") -> list[Path]:
    """Markdown tables and plots from saved JSON results; returns the plots written."""
    from eval.report import write_report

    check_output_place(Path(output))
    with naming(Path(output)):
        return write_report([Path(p) for p in inputs], Path(output), title)


def train(config: Any, plan: Any = None):
    """Fine-tune an encoder (an `embedder.training.TrainConfig`; `plan`: seeds, soup or search) and save the chosen model."""
    from embedder.training_runs import RunPlan, run_plan

    return run_plan(config, plan or RunPlan())


def reduce(
    method: str, model: str | None, output: PathLike, config: Any, fit: CorpusSpec | PathLike | None = None,
    data: PathLike | None = None, split: str = "dev",
):
    """Reduce a model's vectors (`embedder.reduce_model.ReduceConfig`), saving the reduced model folder."""
    from embedder.reduce_model import reduce_model

    sts = load_sts(Path(data), split) if data is not None else None
    return reduce_model(model, Path(output), config, _corpus(fit) if fit is not None else None, sts)


def sweep(
    model: str | None, fit: CorpusSpec | PathLike, data: PathLike, split: str = "dev", seeds: int = 5, batch_size: int = 64,
    recall_docs: int = 10_000, plot: PathLike | None = None,
):
    """Whitening vs JL at every sweep dim: STS Spearman and recall@10 against full-dim search; optionally a PNG."""
    from embedder.reduce_model import sweep_model

    pairs = load_sts(Path(data), split)
    result = sweep_model(model, _corpus(fit), pairs, seeds, batch_size, recall_docs)
    if plot is not None:
        from eval.plots import plot_sweep

        plot_sweep([r.as_dict() for r in result.rows], Path(plot), f"{model or 'default'} · {pairs.name}")
    return result


__all__ = [
    "QueryResult", "add", "add_lexical", "bench_encode", "build", "encode_file", "eval_ann", "eval_retrieval", "eval_sts", "info", "load_encoder",
    "make_stsb_retrieval", "open_index", "query", "reduce", "remove", "report", "sweep", "train", "verify",
]
