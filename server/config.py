"""What `simsearch serve` is told: folders, address, batching, limits and the API key (light: no web stack)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from errors import UsageError

API_KEY_ENV = "SIMSEARCH_API_KEY"
MAX_K = 1000


@dataclass(frozen=True)
class ServeConfig:
    """Served folders, bind address, micro-batching, request limits and security settings."""

    folders: tuple[Path, ...]
    rerankers: tuple[Path, ...] = ()  # cross-encoder folders for /rerank and /search's "rerank", addressed by folder name
    rerank_backend: str = "torch"  # their runtime (torch, onnx, onnx-int8)
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64  # texts per encoder call (one request with more runs alone)
    max_wait_ms: float = 5.0  # longest a request waits for companions, only while others are queued
    api_key: str | None = None
    worker_threads: int | None = None  # torch/FAISS threads; None: all cores
    max_body: int = 1 << 20
    max_queries: int = 256  # texts per search/encode request, documents per add
    max_text_chars: int = 10_000
    max_k: int = MAX_K
    max_rerank_pairs: int = 2048  # (query, text) pairs one request may have re-scored: /rerank texts, /search queries × rerank_top
    batch_timeout_s: float = 30.0  # an encoder+search call slower than this fails its batch with 503
    reload_check_s: float = 1.0  # how often manifests are checked for external changes
    header_timeout_s: float = 10.0  # a request's headers must arrive within this (server.http_protocol)
    insecure: bool = False
    backend: str | None = None  # encoder runtime for every index; None: each index's own (its manifest's)
    engine: str = "local"  # local: vectors in this process; ray: each shard a Ray Serve deployment (distributed.serving)
    address: str | None = None  # --engine ray: the cluster to join; None: a local Ray
    replicas: int = 1  # --engine ray: replicas of each shard deployment

    @property
    def writable(self) -> bool:
        """Write endpoints (documents, reload) exist only behind a key."""
        return self.api_key is not None


def read_api_key(key_file: Path | None) -> str | None:
    """The key from `--api-key-file` (first line), else $SIMSEARCH_API_KEY, else None; an empty key is an error."""
    if key_file is not None:
        try:
            key = key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"--api-key-file {key_file}: cannot be read ({exc.strerror})") from None
        if not key:
            raise UsageError(f"--api-key-file {key_file}: is empty")
        return key
    key = os.environ.get(API_KEY_ENV)
    if key is not None and not key.strip():
        raise UsageError(f"${API_KEY_ENV} is set but empty")
    return key.strip() if key else None


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_config(config: ServeConfig) -> None:
    """Refuse unsafe or impossible settings before anything loads."""
    if not config.folders:
        raise UsageError("give at least one index folder")
    for what, folders in (("index folders", config.folders), ("--rerank-model folders", config.rerankers)):
        names = [folder.name for folder in folders]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UsageError(f"{what} must have distinct names (requests address them by name): {', '.join(twice)} given twice")
    if config.engine != "ray" and (config.address is not None or config.replicas != 1):
        raise UsageError("--address and --replicas only apply with --engine ray")
    if not is_loopback(config.host) and config.api_key is None and not config.insecure:
        raise UsageError(
            f"--host {config.host} is not a loopback address: set --api-key-file (or ${API_KEY_ENV}), or pass --insecure to serve it without a key"
        )
