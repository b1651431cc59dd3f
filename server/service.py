"""Start the service: check the config, load indexes and models, bind, serve until SIGTERM/SIGINT, exit cleanly."""

from __future__ import annotations

import logging
import signal
import socket
import sys

from server.config import ServeConfig, check_config

GRACEFUL_SHUTDOWN_S = 30  # in-flight requests get this long to finish after SIGTERM/SIGINT


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), so the real address can be printed before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: uvicorn writes a response's headers and body separately, and with
    # Nagle's algorithm the body then waits for the client's delayed ACK (~40 ms on every kept-alive request).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        from errors import UsageError

        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def set_threads(threads: int | None) -> None:
    """--workers-threads: torch and FAISS (OpenMP) threads for encoder calls and searches."""
    if threads is not None:
        import faiss
        import torch

        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)


def server_settings(app, config: ServeConfig):
    """uvicorn's settings for the app: quiet logs, graceful shutdown, and the HTTP protocol with a deadline for request headers."""
    import uvicorn

    from server.http_protocol import with_header_timeout

    return uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, lifespan="on",
        http=with_header_timeout(config.header_timeout_s),
    )


def run(config: ServeConfig) -> None:
    """Serve `config.folders` until SIGTERM/SIGINT; in-flight requests finish first, then it returns (exit 0)."""
    from server.registry import Registry, load_rerankers

    check_config(config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    set_threads(config.worker_threads)
    rerankers = load_rerankers(config.rerankers, config.rerank_backend)  # first: a wrong folder fails before the indexes load
    deployer = shard_deployer(config)
    try:
        serve_registry(config, Registry.load(config.folders, backend=config.backend, deployer=deployer), rerankers)
    finally:
        if deployer is not None:
            deployer.stop()  # after the front drained: its searches no longer need the shards
    print("stopped", file=sys.stderr, flush=True)


def shard_deployer(config: ServeConfig):
    """--engine ray: the deployer of every index's shards on Ray Serve (Ray starts on the first deployment); None in one process."""
    if config.engine != "ray":
        return None
    try:
        from distributed.serving import ShardDeployer
    except ImportError as exc:
        from errors import UsageError

        raise UsageError(f"--engine ray needs Ray Serve: pip install 'simsearch[distributed]' ({exc})") from None
    return ShardDeployer(config.replicas, config.worker_threads, config.address, retry_s=config.batch_timeout_s)


def serve_registry(config: ServeConfig, registry, rerankers) -> None:
    """Bind, print the address, and serve the loaded registry until SIGTERM/SIGINT (graceful: in-flight requests finish)."""
    import uvicorn

    from server.app import create_app

    app = create_app(config, registry, rerankers)
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    reranking = f", re-ranking with {', '.join(rerankers)}" if rerankers else ""
    shards = f" ({sum(len(apps) for apps in registry.deployer.deployed.values())} shard deployments on Ray Serve)" if registry.deployer else ""
    print(f"serving {', '.join(registry.entries)}{shards}{reranking} on http://{shown}:{port} (docs at /docs)", file=sys.stderr, flush=True)
    server = uvicorn.Server(server_settings(app, config))
    # uvicorn re-raises a caught SIGTERM/SIGINT after its graceful shutdown; with these handlers that ends in a normal return.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock])
