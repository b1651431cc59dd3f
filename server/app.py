"""The FastAPI app: search, encode, OpenAI-compatible embeddings, re-ranking, document writes, reloads, health and metrics."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from common.corpus import CorpusSpec
from common.reranker import Reranker
from errors import SimsearchError
from index import lexical
from index.fusion import SearchOptions
from index.search import reorder, rerank_pairs, unknown_fields
from index.update import add_documents, remove_documents
from server import models as m
from server.auth import BearerAuth, BodyLimit
from server.batching import BatchFailed, EncoderBatcher, RequestFailed, RerankBatcher, SearchSpec
from server.config import ServeConfig
from server.http_errors import ApiError
from server.metrics import Metrics, MetricsMiddleware
from server.registry import EncoderKey, Registry, Served

log = logging.getLogger("simsearch.serve")


class Service:
    """What the endpoints share: config, the index registry, the re-rankers, one micro-batcher per model, metrics, write locks."""

    def __init__(self, config: ServeConfig, registry: Registry, rerankers: dict[str, Reranker]) -> None:
        self.config = config
        self.registry = registry
        self.rerankers = rerankers
        self.metrics = Metrics()
        self.batchers: dict[EncoderKey, EncoderBatcher] = {}
        self.rerank_batchers: dict[str, RerankBatcher] = {}
        self.locks = {name: asyncio.Lock() for name in registry.entries}  # one write/reload at a time per index
        self.writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="write")
        self.started = time.time()
        for served in registry.entries.values():
            self.metrics.index_documents.labels(served.name).set(served.index.manifest.document_count)

    # --- lookups and limits -------------------------------------------------------------------
    def served(self, name: str) -> Served:
        if name not in self.registry.entries:
            raise ApiError(404, f"no index named {name!r} (served: {', '.join(self.registry.entries)})")
        return self.registry.entries[name]

    def batcher(self, key: EncoderKey) -> EncoderBatcher:
        """The batcher of an encoder, started on first use (a reload may bring a new model)."""
        if key not in self.batchers:
            c = self.config
            self.batchers[key] = EncoderBatcher(self.registry.encoders[key], c.max_batch, c.max_wait_ms / 1000, c.batch_timeout_s, self.metrics)
            self.batchers[key].start()
        return self.batchers[key]

    def rerank_batcher(self, name: str) -> RerankBatcher:
        """The batcher of a served re-ranker (started with the app)."""
        if name not in self.rerank_batchers:
            c = self.config
            self.rerank_batchers[name] = RerankBatcher(self.rerankers[name], c.max_batch, c.max_wait_ms / 1000, c.batch_timeout_s, self.metrics)
            self.rerank_batchers[name].start()
        return self.rerank_batchers[name]

    def reranker_name(self, name: str | None, field: str) -> str:
        """A served re-ranker by folder name (or model reference); None → the first; 404 naming the served ones."""
        if not self.rerankers:
            raise ApiError(404, f"{field}: no re-ranker is served; start the server with --rerank-model DIR (`simsearch train rerank` makes one)")
        if name is None:
            return next(iter(self.rerankers))
        for served, reranker in self.rerankers.items():
            if name in (served, reranker.name):
                return served
        raise ApiError(404, f"{field}: no re-ranker named {name!r} (served: {', '.join(self.rerankers)})")

    def check_pairs(self, pairs: int, field: str, status: int = 400) -> None:
        """A request may have at most max_rerank_pairs (query, text) pairs scored."""
        if pairs > self.config.max_rerank_pairs:
            raise ApiError(status, f"{field}: {pairs} pairs to re-rank exceed the limit of {self.config.max_rerank_pairs} per request", limit="max_rerank_pairs")

    def model_id(self, key: EncoderKey) -> str:
        """A served encoder's model id: the model reference, with `@backend` when the model is served on more than one backend."""
        model, backend = key
        return f"{model}@{backend}" if sum(other[0] == model for other in self.registry.encoders) > 1 else model

    def model_key(self, name: str | None) -> EncoderKey:
        """An index name, a model id (`MODEL` or `MODEL@BACKEND`) → its encoder; None → the first index's."""
        if name is None:
            return self.registry.first().encoder_key
        if name in self.registry.entries:
            return self.registry.entries[name].encoder_key
        for key in self.registry.encoders:
            if name in (key[0], f"{key[0]}@{key[1]}"):
                return key
        models = sorted(self.model_id(key) for key in self.registry.encoders)
        raise ApiError(404, f"no model {name!r}: give an index name ({', '.join(self.registry.entries)}) or a model ({', '.join(models)})")

    def check_texts(self, texts: Sequence[str], field: str, too_big: int = 400, empty: int = 400) -> list[str]:
        """At most max_queries texts, each non-empty and within max_text_chars; the statuses are the endpoint's (/rerank answers 413/422 as TEI)."""
        if len(texts) > self.config.max_queries:
            raise ApiError(too_big, f"{field}: {len(texts)} texts exceed the limit of {self.config.max_queries} per request", limit="max_queries")
        for i, text in enumerate(texts):
            self.check_text(text, f"{field}[{i}]", too_big, empty)
        return list(texts)

    def check_text(self, text: str, field: str, too_big: int = 400, empty: int = 400) -> None:
        if len(text) > self.config.max_text_chars:
            raise ApiError(too_big, f"{field}: {len(text)} characters exceed the limit of {self.config.max_text_chars}", limit="max_text_chars")
        if not text.strip():
            raise ApiError(empty, f"{field}: is empty")

    def check_k(self, k: int, served: Served) -> None:
        if k > self.config.max_k:
            raise ApiError(400, f"k: {k} exceeds the limit of {self.config.max_k}", limit="max_k")
        size = served.index.manifest.document_count
        if k > size and size > 0:  # an empty index answers no hits, as `simsearch query` does
            raise ApiError(400, f"k: {k} exceeds the size of index {served.name!r} ({size} documents)", limit="index_size")

    def check_where(self, where: dict | None, served: Served) -> dict[str, str] | None:
        if not where:
            return None
        problem = unknown_fields(where, sorted(served.fields), served.name)
        if problem:
            raise ApiError(400, f"where: {problem}")
        return {name: str(value) for name, value in where.items()}

    def search_options(self, body: m.SearchRequest, served: Served) -> SearchOptions:
        """The request's mode, fusion and candidates; lexical and hybrid need the index's lexical index (400 naming the command that adds it)."""
        if body.candidates is not None and body.candidates > self.config.max_k:
            raise ApiError(400, f"candidates: {body.candidates} exceeds the limit of {self.config.max_k}", limit="max_k")
        if body.mode in ("lexical", "hybrid") and not served.index.store.has_lexical:
            raise ApiError(400, f"mode: index {served.name!r} {lexical.missing('DIR')}")
        if body.rescore and not served.index.vectors.floats_description():
            raise ApiError(400, f"rescore: index {served.name!r} keeps no float vectors to rescore with (build it with --rescore M)")
        return SearchOptions(body.mode, body.fusion, body.rrf_k, body.alpha, body.candidates, body.rerank_top, body.rerank_weight, body.rescore)

    def search_reranker(self, body: m.SearchRequest) -> str | None:
        """The served re-ranker a search names, within the pair limit (queries × rerank_top), or None."""
        if body.rerank is None:
            return None
        name = self.reranker_name(body.rerank, "rerank")
        self.check_pairs(len(body.queries) * body.rerank_top, "queries × rerank_top")
        return name

    def require_document_writes(self) -> None:
        """Documents are written through the folder: on Ray Serve shards a 405 says how (the server reloads a changed folder by itself)."""
        if self.registry.deployer is not None:
            raise ApiError(
                405, "documents: writes are not served with --engine ray; change the folder (`simsearch index add|remove DIR`, or "
                "`simsearch index build ... --overwrite` for a sharded one) and the server reloads it", headers={"Allow": ""},
            )
        self.require_writes()

    def require_writes(self) -> None:
        if not self.config.writable:
            raise ApiError(403, "write endpoints are disabled: start the server with --api-key-file (or SIMSEARCH_API_KEY)")

    # --- work ---------------------------------------------------------------------------------
    async def search(self, served: Served, body: m.SearchRequest) -> dict:
        texts = self.check_texts(body.queries, "queries")
        self.check_k(body.k, served)
        reranker = self.search_reranker(body)
        where, options = self.check_where(body.where, served), self.search_options(body, served)
        k = body.k if reranker is None else options.rerank_depth(body.k)
        spec = SearchSpec(served.index, k, where, options)
        hits = await self.batcher(served.encoder_key).search(texts, spec)
        if reranker is not None:  # the first stage's candidates, re-scored in the re-ranker's own batches (shared with /rerank)
            scores = await self.rerank_batcher(reranker).score(rerank_pairs(texts, hits, options.rerank_top))
            hits = reorder(hits, scores, options.rerank_top, options.rerank_weight, k=body.k)
        return {"index": served.name, "results": [{"query": q, "hits": [h.to_json() for h in row]} for q, row in zip(texts, hits)]}

    async def rerank(self, body: m.RerankRequest) -> list[dict]:
        """Each text's score against the query, best first (`top_n` of them), as TEI's /rerank answers."""
        name = self.reranker_name(body.model, "model")
        self.check_texts(body.texts, "texts", too_big=413, empty=422)
        self.check_pairs(len(body.texts), "texts", status=413)
        self.check_text(body.query, "query", too_big=413, empty=422)
        scores = await self.rerank_batcher(name).score([(body.query, text) for text in body.texts])
        order = sorted(range(len(body.texts)), key=lambda i: -scores[i])[: body.top_n]
        return [{"index": i, "score": float(scores[i]), **({"text": body.texts[i]} if body.return_text else {})} for i in order]

    async def encode(self, texts: Sequence[str], model: str | None, field: str) -> tuple[EncoderKey, np.ndarray]:
        key = self.model_key(model)
        return key, await self.batcher(key).encode(self.check_texts(texts, field))

    async def in_thread(self, func, *args):
        return await asyncio.get_running_loop().run_in_executor(self.writer, func, *args)

    async def reload(self, name: str) -> Served:
        """Load the folder anew and swap it in (under the index's lock); searches meanwhile use the old one."""
        served = await self.in_thread(self.registry.reload, name)
        self.metrics.reloads.labels(name).inc()
        self.metrics.index_documents.labels(name).set(served.index.manifest.document_count)
        return served

    async def write(self, name: str, func, *args) -> Served:
        """Run an index update in a thread (it takes the folder's lock), then reload the index."""
        self.require_document_writes()
        served = self.served(name)
        async with self.locks[name]:
            try:
                await self.in_thread(func, served, *args)
            except SimsearchError as exc:
                raise ApiError(400, str(exc)) from None
            return await self.reload(name)

    def add(self, served: Served, documents: list[m.NewDocument], upsert: bool) -> None:
        """In a thread: the documents as a JSONL corpus in a temporary file, added by `index.update.add_documents`."""
        with tempfile.TemporaryDirectory(prefix="simsearch-add-") as tmp:
            path = Path(tmp) / "documents.jsonl"
            with path.open("w", encoding="utf-8") as handle:
                for doc in documents:
                    handle.write(json.dumps({**doc.metadata, "id": doc.id, "text": doc.text}, ensure_ascii=False) + "\n")
            try:
                add_documents(served.folder, CorpusSpec(path, id_column="id", format="jsonl"), self.registry.encoders[served.encoder_key], upsert)
            except SimsearchError as exc:
                raise type(exc)(str(exc).replace(str(path), "documents").replace("--upsert", "?upsert=true")) from None

    def remove(self, served: Served, ids: list[int]) -> None:
        remove_documents(served.folder, ids)

    async def watch(self) -> None:
        """Reload an index whose manifest changed on disk (an external `index add/remove/build --overwrite`); say when a folder goes or comes back."""
        gone: set[str] = set()
        while True:
            await asyncio.sleep(self.config.reload_check_s)
            missing = set(self.registry.missing())
            for name in sorted(missing - gone):
                log.warning("index %s: its folder %s is gone from disk; still answering from the copy loaded in memory (/readyz reports it)",
                            name, self.registry.entries[name].folder)
            for name in sorted(gone - missing):
                log.info("index %s: its folder %s is back on disk", name, self.registry.entries[name].folder)
            gone = missing
            for name in self.registry.stale():
                if self.locks[name].locked():
                    continue  # a write through the API is reloading it already
                async with self.locks[name]:
                    try:
                        await self.reload(name)
                    except Exception as exc:  # noqa: BLE001 - keep serving the old index, try again next tick
                        log.warning("reload of %s failed, still serving the previous version: %s", name, exc)

    def summary(self, served: Served) -> m.IndexSummary:
        mf = served.index.manifest
        return m.IndexSummary(
            name=served.name, model=mf.model, backend=mf.backend, served_backend=served.encoder_key[1], embedding_dim=mf.embedding_dim, document_count=mf.document_count,
            index_type=mf.index_type, faiss_factory=mf.faiss_factory, created=mf.created, updates=len(mf.source.get("updates", [])),
            metadata_fields=sorted(served.fields), loaded_at=served.loaded_at,
        )


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def validation_message(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one line naming each field: `body.k: Input should be a valid integer`."""
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()[:5]]
    return "; ".join(parts)


def create_app(config: ServeConfig, registry: Registry, rerankers: dict[str, Reranker] | None = None) -> FastAPI:
    """The HTTP app over loaded indexes (and re-rankers by name); batchers and the manifest watcher run while it is served."""
    service = Service(config, registry, rerankers or {})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for key in registry.encoders:
            service.batcher(key)
        for name in service.rerankers:
            service.rerank_batcher(name)
        watcher = asyncio.get_running_loop().create_task(service.watch())
        yield
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        for batcher in [*service.batchers.values(), *service.rerank_batchers.values()]:
            await batcher.stop()
        service.writer.shutdown(wait=True)

    app = FastAPI(title="simsearch", summary="Sentence-embedding search over FAISS index folders", lifespan=lifespan)
    app.state.service = service
    errors = {status: {"model": m.ErrorBody} for status in (400, 404, 413, 422, 503)}
    write_errors = errors | {403: {"model": m.ErrorBody}, 405: {"model": m.ErrorBody}}

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(BatchFailed)
    async def batch_failed(request: Request, exc: BatchFailed) -> JSONResponse:
        return error_response(ApiError(503, str(exc)))

    @app.exception_handler(RequestFailed)
    async def request_failed(request: Request, exc: RequestFailed) -> JSONResponse:
        return error_response(ApiError(422, str(exc)))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(ApiError(422, validation_message(exc)))

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        """Liveness: the process answers (no key needed)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=m.Ready, responses={503: {"model": m.Ready}}, tags=["health"])
    async def readyz():
        """Readiness: every index and model loaded, every batch worker running, every served folder still on disk, and (--engine ray) every shard with a live replica."""
        missing = registry.missing()
        degraded = await asyncio.to_thread(registry.degraded) if registry.deployer else []
        workers = [*service.batchers.values(), *service.rerank_batchers.values()]
        started = len(service.batchers) >= len(registry.encoders) and len(service.rerank_batchers) == len(service.rerankers)
        ready = bool(registry.entries) and all(b.alive for b in workers) and started and not missing and not degraded
        body = m.Ready(
            ready=ready, indexes=len(registry.entries), models=len(registry.encoders), rerankers=len(service.rerankers), missing=missing, degraded=degraded,
        )
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @app.get("/indexes", response_model=m.IndexList, tags=["indexes"])
    async def list_indexes():
        return m.IndexList(indexes=[service.summary(s) for s in registry.entries.values()])

    @app.get("/indexes/{name}", response_model=m.IndexSummary, responses=errors, tags=["indexes"])
    async def index_summary(name: str):
        return service.summary(service.served(name))

    @app.post("/indexes/{name}/search", response_model=m.SearchResponse, responses=errors, tags=["search"])
    async def search_index(name: str, body: m.SearchRequest):
        """Top-k hits per query, the same hit objects `simsearch query --json` prints."""
        return await service.search(service.served(name), body)

    @app.post("/search", response_model=m.SearchResponse, responses=errors, tags=["search"])
    async def search_first(body: m.SearchRequest):
        """`/indexes/{name}/search` on the first index given to `simsearch serve`."""
        return await service.search(registry.first(), body)

    @app.post("/encode", response_model=m.EncodeResponse, responses=errors | {200: {"content": {"application/octet-stream": {}}}}, tags=["encode"])
    async def encode(body: m.EncodeRequest, format: Literal["json", "npy"] = Query("json", description="npy: the vectors as a .npy file")):
        """L2-normalized float32 vectors of `texts` with an index's model."""
        key, vectors = await service.encode(body.texts, body.model, "texts")
        if format == "npy":
            buffer = io.BytesIO()
            np.save(buffer, vectors, allow_pickle=False)
            return Response(buffer.getvalue(), media_type="application/octet-stream")
        return {"model": service.model_id(key), "dim": int(vectors.shape[1]), "vectors": vectors.tolist()}

    @app.post("/rerank", response_model=list[m.RerankHit], response_model_exclude_none=True, responses=errors, tags=["rerank"])
    async def rerank(body: m.RerankRequest):
        """Score each text against the query with a served cross-encoder; best first (TEI's /rerank shape, plus `top_n` and `model`)."""
        return await service.rerank(body)

    @app.post("/v1/embeddings", response_model=m.EmbeddingsResponse, responses=errors, tags=["openai"])
    async def embeddings(body: m.EmbeddingsRequest):
        """OpenAI-compatible embeddings (the `openai` client with `base_url` works); usage counts the model's tokens."""
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise ApiError(422, "input: must not be empty")
        key, vectors = await service.encode(texts, body.model, "input")
        if body.dimensions is not None and body.dimensions != vectors.shape[1]:
            raise ApiError(400, f"dimensions: model {service.model_id(key)} gives {vectors.shape[1]}-dim vectors, not {body.dimensions}")
        as_base64 = body.encoding_format == "base64"
        data = [
            {"object": "embedding", "index": i, "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if as_base64 else v.tolist()}
            for i, v in enumerate(vectors)
        ]
        tokens = await asyncio.to_thread(service.registry.encoders[key].count_tokens, texts)  # 256 long inputs take a while
        return {"object": "list", "data": data, "model": service.model_id(key), "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @app.get("/v1/models", response_model=m.ModelList, tags=["openai"])
    async def list_models():
        """The served models (an index name is accepted wherever a model is)."""
        return m.ModelList(data=[m.ModelCard(id=service.model_id(key), created=int(service.started)) for key in registry.encoders])

    @app.post("/indexes/{name}/documents", response_model=m.IndexSummary, responses=write_errors, tags=["write"])
    async def add(name: str, body: m.AddRequest, upsert: bool = Query(False, description="replace documents whose id exists")):
        """Add documents (atomic swap, the folder's lock, like `simsearch index add`); needs the API key; 405 with --engine ray."""
        service.require_document_writes()
        service.check_texts([d.text for d in body.documents], "documents")
        ids = [d.id for d in body.documents]
        if len(set(ids)) != len(ids):
            raise ApiError(400, "documents: an id appears twice")
        clashing = [d.id for d in body.documents if {"id", "text"} & d.metadata.keys()]
        if clashing:
            raise ApiError(422, f"documents: metadata of id {clashing[0]} uses a reserved field name (id, text)")
        return service.summary(await service.write(name, service.add, body.documents, upsert))

    @app.delete("/indexes/{name}/documents", response_model=m.IndexSummary, responses=write_errors, tags=["write"])
    async def remove(name: str, body: m.RemoveRequest):
        """Remove documents by id (an unknown id is an error and nothing changes); needs the API key; 405 with --engine ray."""
        return service.summary(await service.write(name, service.remove, body.ids))

    @app.post("/indexes/{name}/reload", response_model=m.IndexSummary, responses=errors | {403: {"model": m.ErrorBody}}, tags=["write"])
    async def reload(name: str):
        """Swap in the folder as it is on disk now, without dropping a request; needs the API key."""
        service.require_writes()
        service.served(name)
        async with service.locks[name]:
            try:
                return service.summary(await service.reload(name))
            except SimsearchError as exc:
                raise ApiError(400, f"reload of {name!r} failed, still serving the previous version: {exc}") from None

    @app.get("/metrics", tags=["health"])
    async def metrics() -> Response:
        """Prometheus text format: requests, latency, batch sizes, queue wait, index sizes."""
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_middleware(BodyLimit, max_bytes=config.max_body)
    app.add_middleware(BearerAuth, api_key=config.api_key)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    return app
