"""Micro-batching: concurrent encode/search requests share one encoder call and one FAISS search per group; re-ranking (/rerank, a search's "rerank") one cross-encoder call.

One worker per model takes queued requests in arrival order, at most `max_batch`
texts (or pairs) at a time, and runs them in a thread. It never waits when only one request
is queued (a lone client pays no batching delay); while others are queued it may
wait up to `max_wait` from the oldest request's arrival for the batch to fill.
A batch that exceeds `timeout` fails its own requests (503). A batch that raises is
answered request by request: each is computed on its own, so a request the model
cannot process fails alone (`RequestFailed`, 422) and its batch-mates get their
answers; only when the model fails a probe too is it broken (503).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from common.encoder import Encoder
from common.reranker import Reranker
from index.fusion import SearchOptions
from index.search import Hit, SearchIndex, Where
from server.metrics import Metrics

log = logging.getLogger("simsearch.serve")
Model = TypeVar("Model", Encoder, Reranker)

# Sentences per forward pass inside one batch. The encoder sorts a batch's texts by length first, so small
# passes pad little: on 2 CPU cores (torch, all-MiniLM-L6-v2, short queries) 32 texts cost 2.7 ms each in
# passes of 8 against 4.2 ms in one pass of 32 (docs/benchmarks.md, "Serving").
ENCODE_BATCH = 8
RERANK_BATCH = 16  # pairs per cross-encoder forward pass (pairs are longer than queries)


PROBE_TEXT = "probe"  # what a failed request is checked against: the model works if it handles this (as a text or a pair)


class BatchFailed(Exception):
    """The model timed out or is broken (it failed a probe too): 503, the service itself keeps running."""


class RequestFailed(Exception):
    """This request's own texts made the model (or search) fail while a probe works: 422, other requests are unaffected."""


@dataclass(frozen=True)
class SearchSpec:
    """What to search once a request's texts are embedded: the index snapshot taken at arrival, k, filter."""

    index: SearchIndex
    k: int
    where: Where | None
    options: SearchOptions = SearchOptions()

    def group(self) -> tuple[int, int, tuple[tuple[str, str], ...], SearchOptions]:
        """Requests with equal groups are answered by one search call."""
        return id(self.index), self.k, tuple(sorted((self.where or {}).items())), self.options


@dataclass
class Job:
    texts: list[Any]  # the texts to encode, or the (query, text) pairs to score
    search: SearchSpec | None
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


def describe(exc: BaseException) -> str:
    """An exception as `Type: message` for one log or error line."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class MicroBatcher(Generic[Model]):
    """Queue + one worker for one model; subclasses say how a batch is computed and how the model is probed."""

    model_kind = "model"  # how errors name it

    def __init__(self, model: Model, max_batch: int, max_wait_s: float, timeout_s: float, metrics: Metrics) -> None:
        self.model = model
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.timeout_s = timeout_s
        self.metrics = metrics
        self._pending: deque[Job] = deque()
        self._arrived = asyncio.Event()
        self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="batch")  # spare threads outlive a stuck batch
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run_forever())

    async def stop(self) -> None:
        """Stop the worker (after the server has finished its in-flight requests) and let threads finish."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._threads.shutdown(wait=False, cancel_futures=True)

    @property
    def alive(self) -> bool:
        return self._worker is not None and not self._worker.done()

    async def _submit(self, texts: list[Any], spec: SearchSpec | None) -> Any:
        job = Job(texts, spec, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._arrived.set()
        return await job.future  # a cancelled request cancels only its own future; the worker skips it

    async def _next_batch(self) -> list[Job]:
        """The oldest jobs that fit in `max_batch` texts; waits for companions only while more are queued."""
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        batch = [self._pending.popleft()]
        size = len(batch[0].texts)
        deadline = batch[0].queued + self.max_wait_s
        while size < self.max_batch:
            if not self._pending:
                remaining = deadline - time.perf_counter()
                if len(batch) == 1 or remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                continue
            if size + len(self._pending[0].texts) > self.max_batch:
                break
            job = self._pending.popleft()
            batch.append(job)
            size += len(job.texts)
        return [job for job in batch if not job.future.done()]

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            started = time.perf_counter()
            for job in batch:
                self.metrics.queue_wait.observe(started - job.queued)
            self.metrics.batch_texts.observe(sum(len(job.texts) for job in batch))
            self.metrics.batch_requests.observe(len(batch))
            try:
                results = await self._in_thread(self._compute, batch)
            except asyncio.TimeoutError:
                self.metrics.failed_batches.inc()
                self._fail(batch, f"timed out after {self.timeout_s:g} s")
                continue
            except Exception as exc:  # noqa: BLE001 - any failure of this batch is answered, then the worker goes on
                self.metrics.failed_batches.inc()
                log.error("batch of %d request(s) failed (%s)%s", len(batch), describe(exc), "; retrying each on its own" if len(batch) > 1 else "")
                await self._answer_alone(batch, exc)
                continue
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            for job, result in zip(batch, results):
                if not job.future.done():
                    job.future.set_result(result)

    async def _in_thread(self, func, *args) -> Any:
        return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(self._threads, func, *args), self.timeout_s)

    def _fail(self, jobs: list[Job], reason: str) -> None:
        """Answer `jobs` with 503: the model timed out or is broken."""
        log.error("%d request(s) failed: %s", len(jobs), reason)
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(BatchFailed(f"the {self.model_kind} batch failed ({reason}); retry"))

    async def _answer_alone(self, batch: list[Job], batch_error: Exception) -> None:
        """After a failed batch: compute each request on its own, so that only the request at fault fails."""
        for job in batch:
            if job.future.done():
                continue
            try:
                result = (await self._in_thread(self._compute, [job]))[0] if len(batch) > 1 else None
            except asyncio.TimeoutError:
                self._fail([job], f"timed out after {self.timeout_s:g} s")
                continue
            except Exception as exc:  # noqa: BLE001 - judged below: this request's fault, or a broken encoder
                batch_error = exc
            else:
                if len(batch) > 1:
                    job.future.set_result(result)
                    continue
            await self._blame(job, batch_error)

    async def _blame(self, job: Job, error: Exception) -> None:
        """`job` failed on its own: its texts are at fault (422) when the model still handles a probe, else it is broken (503)."""
        try:
            await self._in_thread(self._probe)
        except Exception as probe_error:  # noqa: BLE001 - the model itself is failing
            self._fail([job], f"{describe(error)}; a probe text fails too: {describe(probe_error)}")
            return
        log.warning("request of %d item(s) failed on its own, %s healthy: %s", len(job.texts), self.model_kind, describe(error))
        if not job.future.done():
            job.future.set_exception(RequestFailed(f"the {self.model_kind} could not process this request's texts ({describe(error)})"))

    def _probe(self) -> None:
        """In a thread: raise if the model cannot handle a trivial input."""
        raise NotImplementedError

    def _compute(self, batch: list[Job]) -> list[Any]:
        """In a thread: each job's result, in order."""
        raise NotImplementedError


class EncoderBatcher(MicroBatcher[Encoder]):
    """One encoder's queue; `encode` and `search` return this request's share of a batch."""

    model_kind = "encoder"

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        return await self._submit(list(texts), None)

    async def search(self, texts: Sequence[str], spec: SearchSpec) -> list[list[Hit]]:
        return await self._submit(list(texts), spec)

    def _probe(self) -> None:
        self.model.encode([PROBE_TEXT], 1, False)

    def _compute(self, batch: list[Job]) -> list[Any]:
        """In a thread: one encoder call for every text of the batch, then one search per (index, k, where) group."""
        vectors = self.model.encode([text for job in batch for text in job.texts], ENCODE_BATCH, show_progress=False)
        bounds = np.cumsum([0] + [len(job.texts) for job in batch])
        results: list[Any] = [vectors[start:end] for start, end in zip(bounds[:-1], bounds[1:])]
        groups: dict[tuple, list[int]] = {}
        for position, job in enumerate(batch):
            if job.search is not None:
                groups.setdefault(job.search.group(), []).append(position)
        for positions in groups.values():
            spec = batch[positions[0]].search
            texts = [text for p in positions for text in batch[p].texts]
            hits = spec.index.search_embedded(texts, np.concatenate([results[p] for p in positions]), spec.k, spec.where, spec.options)
            for p in positions:
                results[p], hits = hits[: len(batch[p].texts)], hits[len(batch[p].texts) :]
        return results


class RerankBatcher(MicroBatcher[Reranker]):
    """One cross-encoder's queue; `score` returns the scores of this request's (query, text) pairs, computed with its batch-mates'."""

    model_kind = "re-ranker"

    async def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        return await self._submit(list(pairs), None)

    def _probe(self) -> None:
        self.model.score_pairs([(PROBE_TEXT, PROBE_TEXT)], 1)

    def _compute(self, batch: list[Job]) -> list[Any]:
        """In a thread: one cross-encoder call for every pair of the batch."""
        scores = self.model.score_pairs([pair for job in batch for pair in job.texts], RERANK_BATCH)
        bounds = np.cumsum([0] + [len(job.texts) for job in batch])
        return [scores[start:end] for start, end in zip(bounds[:-1], bounds[1:])]
