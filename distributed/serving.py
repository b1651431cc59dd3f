"""Ray Serve shards (`simsearch serve --engine ray`): each shard of an index folder is a Serve deployment holding its vectors.

The server's front (the same FastAPI app as the single-process server, in this process) encodes a query batch
once, sends the vectors to every shard's deployment handle and merges the per-shard top k by score
(`index.shards.merge_top_k`, as a sharded folder searched in one process does). Texts, metadata and the
lexical index stay with the front (the folder's docs.sqlite); only the vectors, the part that grows with the
corpus, live in the replicas. Serve owns the replicas: it places them (spread over the cluster's nodes),
restarts one that dies, and a shard call whose replica died is sent again, to a live replica or to the
restarted one. Ray is imported only in this package, and here only once `connect` has set up the local cluster's token.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distributed.engine import connect, first_line
from errors import DataError
from index.manifest import Manifest
from index.shards import merge_top_k, shard_name
from index.vectors import VectorIndex

log = logging.getLogger("simsearch.serve")

RETRY_PAUSE_S = 0.1
OLD_VERSION_GRACE_S = 30.0  # a replaced version's shards answer searches already under way this long, then go
HEALTH_CHECK_S = 2.0  # how often Serve checks a replica (a dead one is replaced sooner than with Serve's 10 s)
CONSTRUCTOR_TRIES = 3  # a replica that cannot load its shard (a broken file) fails the deployment after this many tries


@dataclass(frozen=True)
class ShardSpec:
    """What a shard replica loads: its folder inside one index version, the index type, tuned parameters, float file."""

    folder: str
    index_type: str
    search_params: dict[str, int]
    floats: dict | None
    threads: int | None  # FAISS threads in the replica; None: FAISS's default


class ShardReplica:
    """One shard's vectors in a Serve replica, read once from the index version it was deployed for."""

    def __init__(self, spec: ShardSpec) -> None:
        if spec.threads:
            import faiss

            faiss.omp_set_num_threads(spec.threads)
        self.vectors = VectorIndex.read(Path(spec.folder), spec.index_type, spec.search_params, floats=spec.floats)

    async def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None, rescore: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of this shard's top k; run on the replica's event loop (no thread hop: a search takes milliseconds)."""
        return self.vectors.search(queries, k, allowed, rescore)


class ShardUnavailable(DataError):
    """A shard had no live replica for `retry_s`: the search fails rather than answer without it."""


@dataclass
class RemoteShards:
    """VectorIndex's search face over Serve handles, one per shard: `search` fans out, waits, merges; counts come from the manifest."""

    apps: list[str]  # the Serve application of each shard
    handles: list[Any]
    dim: int
    live_count: int
    floats: dict
    retry_s: float  # how long a shard call is sent again while its deployment has no live replica

    @property
    def device(self) -> str:
        return f"Ray Serve ({len(self.apps)} shard deployment{'s' if len(self.apps) > 1 else ''})"

    def floats_description(self) -> dict:
        return self.floats

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None, rescore: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top k over all shards: every shard's top k (same filter and rescoring) asked at once, then merged by score."""
        args = (queries, k, allowed_ids, rescore)
        calls = [handle.search.remote(*args) for handle in self.handles]
        found = [self.answer(number, call, args) for number, call in enumerate(calls)]
        return merge_top_k([f[0] for f in found], [f[1] for f in found], k)

    def answer(self, number: int, call: Any, args: tuple) -> tuple[np.ndarray, np.ndarray]:
        """One shard's answer; a call whose replica died is sent again (Serve picks a live or restarted replica) for up to `retry_s`."""
        from ray.exceptions import RayActorError

        deadline = time.monotonic() + self.retry_s
        while True:
            try:
                return call.result()
            except RayActorError as exc:
                if time.monotonic() > deadline:
                    raise ShardUnavailable(f"shard {self.apps[number]}: no live replica for {self.retry_s:g} s ({type(exc).__name__})") from None
                log.warning("shard %s: its replica died during a search; sending the search again", self.apps[number])
                time.sleep(RETRY_PAUSE_S)
                call = self.handles[number].search.remote(*args)


@dataclass
class ShardDeployer:
    """Deploys each loaded index version's shards as Serve applications (named for this server) and removes replaced ones."""

    replicas: int = 1
    threads: int | None = None
    address: str | None = None  # None: a local Ray started (and stopped) by this process
    retry_s: float = 30.0  # the server's --batch-timeout: a batch fails by its deadline, not by a shorter retry window
    prefix: str = field(default_factory=lambda: f"simsearch-{secrets.token_hex(3)}")  # two servers on one cluster never share an app
    deployed: dict[str, list[str]] = field(default_factory=dict)  # index name → the applications of the version it serves
    pending: dict[str, list[str]] = field(default_factory=dict)  # index name → the applications of a version being loaded
    versions: int = 0
    started: bool = False
    timers: list[threading.Timer] = field(default_factory=list)  # pending removals of replaced versions

    def start(self) -> None:
        """Join (or start) Ray and Serve without Serve's HTTP proxy: the front is our own server."""
        if not self.started:
            connect(self.address)
            from ray import serve

            logging.getLogger("ray.serve").setLevel(logging.WARNING)
            serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING"})
            self.started = True

    def opener(self, name: str):
        """The `open_vectors` of index `name` for `index.search.load_index`."""
        return lambda version, manifest: self.deploy(name, version, manifest)

    def deploy(self, name: str, version: Path, manifest: Manifest) -> RemoteShards:
        """One Serve application per shard of this version, started together and waited for; `adopt` or `discard` them next."""
        self.start()
        from ray import serve

        self.versions += 1
        entries = manifest.shards or [{"path": "."}]
        targets, apps = [], []
        for number, entry in enumerate(entries):
            spec = ShardSpec(str(version / entry["path"]), manifest.index_type, manifest.search_params, manifest.floats or None, self.threads)
            deployment = serve.deployment(ShardReplica).options(
                name=shard_name(number), num_replicas=self.replicas, ray_actor_options={"num_cpus": 0}, health_check_period_s=HEALTH_CHECK_S,
                max_constructor_retry_count=CONSTRUCTOR_TRIES,
            )
            app = f"{self.prefix}.{name}.v{self.versions}.{shard_name(number)}"
            targets.append(serve.RunTarget(target=deployment.bind(spec), name=app, route_prefix=None))
            apps.append(app)
        self.pending[name] = apps
        try:
            handles = serve.run_many(targets)
        except RuntimeError as exc:  # a replica could not load its shard
            raise DataError(f"{version}: a shard did not start on Ray Serve: {self.failure(apps) or first_line(exc)}") from None
        return RemoteShards(apps, list(handles), manifest.embedding_dim, manifest.document_count, manifest.floats or {}, self.retry_s)

    def failure(self, apps: list[str]) -> str | None:
        """Why a deployment of `apps` failed: the last line of the replica's error, as Serve reports it."""
        from ray import serve

        applications = serve.status().applications
        for app in apps:
            for deployment in (applications[app].deployments.values() if app in applications else []):
                lines = [line for line in deployment.message.splitlines() if line.strip()]
                if lines and str(deployment.status).endswith("DEPLOY_FAILED"):
                    last = re.sub(r"^[\w.]+(Error|Exception): ", "", lines[-1])  # `errors.DataError: FILE: ...` → `FILE: ...`
                    return f"{app.rsplit('.', 1)[1]}: {last}"
        return None

    def adopt(self, name: str) -> None:
        """The version just loaded serves `name` now: its previous version's applications go after a grace period."""
        old, self.deployed[name] = self.deployed.get(name, []), self.pending.pop(name)
        if old:
            timer = threading.Timer(OLD_VERSION_GRACE_S, self.delete, args=(old,))
            timer.daemon = True
            timer.start()
            self.timers.append(timer)

    def discard(self, name: str) -> None:
        """The version being loaded failed (its shards, or the folder's other files): remove what was deployed for it."""
        self.delete(self.pending.pop(name, []))

    def delete(self, apps: list[str]) -> None:
        import ray
        from ray import serve

        if not ray.is_initialized():  # after stop(): Serve would start a new local Ray just to answer
            return
        for app in apps:
            serve.delete(app, _blocking=False)

    def unavailable(self) -> list[str]:
        """`INDEX/shard-NNN` of every served shard with no running replica (`/readyz` reports them)."""
        from ray import serve

        applications = serve.status().applications
        down = []
        for name, apps in self.deployed.items():
            for app in apps:
                status = applications.get(app)
                running = sum(d.replica_states.get("RUNNING", 0) for d in status.deployments.values()) if status else 0
                if not running:
                    down.append(f"{name}/{app.rsplit('.', 1)[1]}")
        return down

    def stop(self) -> None:
        """After the front has drained: stop the local Ray this server started (replicas and all), or on a cluster delete its applications."""
        if not self.started:
            return
        for timer in self.timers:  # a Ray call after ray.shutdown() can end this process (Ray's core worker exits)
            timer.cancel()
        if self.address is None:
            import ray

            ray.shutdown()  # (serve.shutdown() first waits on the controller, seen to hang in Ray 2.60)
        else:
            self.delete([app for apps in self.deployed.values() for app in apps])
