"""Prometheus metrics of one app (its own CollectorRegistry, so several apps in a process never mix counts)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Request counts and latency per endpoint and status, batch sizes, queue wait, batch time, index sizes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("simsearch_requests", "HTTP requests by endpoint (route template) and status.", ["endpoint", "status"], registry=r)
        self.latency = Histogram("simsearch_request_seconds", "HTTP request latency by endpoint.", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_texts = Histogram("simsearch_batch_texts", "Texts per encoder call.", buckets=SIZE_BUCKETS, registry=r)
        self.batch_requests = Histogram("simsearch_batch_requests", "Requests per encoder call.", buckets=SIZE_BUCKETS, registry=r)
        self.queue_wait = Histogram("simsearch_queue_wait_seconds", "Time a request waited for its batch to start.", buckets=LATENCY_BUCKETS, registry=r)
        self.batch_seconds = Histogram("simsearch_batch_seconds", "Encoder call plus FAISS search time per batch.", buckets=LATENCY_BUCKETS, registry=r)
        self.failed_batches = Counter("simsearch_failed_batches", "Batches that raised or timed out (their requests got 503).", registry=r)
        self.index_documents = Gauge("simsearch_index_documents", "Documents in each served index.", ["index"], registry=r)
        self.reloads = Counter("simsearch_index_reloads", "Index reloads (API, after a write, or a changed manifest).", ["index"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware: counts and times every HTTP request under its route template (`other` when none matched)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_and_note(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "other")
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
