"""Assemble an index folder from vectors already encoded elsewhere (e.g. by a Ray actor pool) and recorded in a partial build.

The recipe of autofaiss: train once on a sample of the recorded vectors, add
every block to its shard under its global ids, tune the search knob on
held-out corpus vectors, then write one folder (or S shards) in the usual
format. The sample positions, held-out queries and tuning are those of
`index.build`, so a build from the same vectors gives the same index.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import publish_version
from common.progress import progress_bar
from common.measures import StreamingExactTopK
from index.build import TUNING_K, BuildConfig, describe_build, keep_floats, measure, sample_positions
from index.gpu import place
from index.manifest import SHARDED_FORMAT_VERSION, Manifest
from index.partial import PartialBuild
from index.plan import IndexPlan, parse_memory, tuning_query_count
from index.selection import Selection, select_plan
from index.shards import ShardedVectors
from index.vectors import VectorIndex


def shard_bounds(n: int, shards: int) -> np.ndarray:
    """Corpus positions where each shard starts (plus n): contiguous, sizes differ by at most one."""
    return np.array([i * n // shards for i in range(shards + 1)], dtype=np.int64)


def choose_by_measuring(partial: PartialBuild, config: BuildConfig) -> Selection:
    """`--type auto`: measure the candidate types on `partial`'s recorded vectors (index.selection), with progress; saved, so --resume keeps the choice."""
    saved = partial.load_selection()
    if saved is not None:
        return Selection.from_dict(saved[1], saved[0])
    with progress_bar(None, "auto: measuring", "candidate", config.show_progress) as bar:
        def measuring(label: str, total: int) -> None:
            bar.total = total
            bar.set_postfix_str(label)
            bar.update(1)

        selection = select_plan(partial.stream()[0], parse_memory(config.max_memory), config.target_recall, config.auto_budget, config.seed, measuring)
    partial.save_selection(selection.plan, selection.as_dict())
    return selection


def assemble_index(
    partial: PartialBuild, out_dir: Path, plan: IndexPlan | None, config: BuildConfig, model: str, provenance: dict[str, Any],
    source: dict[str, Any], shards: int = 1, engine: dict[str, Any] | None = None, started: float | None = None,
) -> Manifest:
    """Train on a sample of `partial`'s recorded vectors, add them all to `shards` shards, tune, and write `out_dir`.

    `plan` None (`--type auto`): the plan is chosen by measuring candidates on the recorded vectors first (`choose_by_measuring`).
    """
    started = time.perf_counter() if started is None else started
    selection = choose_by_measuring(partial, config) if plan is None else None
    plan = selection.plan if selection else plan
    all_vectors, all_ids = partial.stream()
    n = partial.done
    positions = sample_positions(n, plan, config.seed)
    n_queries = min(tuning_query_count(n), len(positions))
    sample = np.asarray(all_vectors[positions])
    held_out = np.asarray(all_ids[positions[:n_queries]])
    placement = place(plan, config.gpu)
    trained = VectorIndex.create(plan, partial.dim)
    if trained.needs_training():
        placement.train(trained, sample[n_queries:] if len(sample) > n_queries else sample)
        trained = placement.to_cpu(trained)
    parts = [trained.copy() for _ in range(shards)]
    bounds = shard_bounds(n, shards)
    held = np.zeros(n, dtype=bool)
    held[positions[:n_queries]] = True  # added after tuning, as in index.build
    exact = StreamingExactTopK(sample[:n_queries], TUNING_K + 1)
    for start in range(0, n, config.chunk_size):
        stop = min(n, start + config.chunk_size)
        vectors, ids, keep = np.asarray(all_vectors[start:stop]), np.asarray(all_ids[start:stop]), ~held[start:stop]
        for number, part in enumerate(parts):
            lo, hi = max(start, bounds[number]) - start, min(stop, bounds[number + 1]) - start
            if lo < hi:
                placement.add(part, vectors[lo:hi][keep[lo:hi]], ids[lo:hi][keep[lo:hi]])
        exact.add(vectors[keep], ids[keep])
    parts = [placement.to_cpu(part) for part in parts]
    for number, part in enumerate(parts):
        lo, hi = bounds[number], bounds[number + 1]
        keep_floats(part, plan, config, (all_vectors[lo:hi], all_ids[lo:hi]), held_out)
    searcher = parts[0] if shards == 1 else ShardedVectors(parts)
    quality = measure(plan, searcher, exact, held_out, config.target_recall)
    owner = np.searchsorted(bounds, positions[:n_queries], side="right") - 1
    for number, part in enumerate(parts):
        part.add(sample[:n_queries][owner == number], held_out[owner == number])

    folder = partial.finish()
    extra: dict[str, Any] = {"engine": engine or {}}
    if shards == 1:
        searcher.write(folder)
    else:
        extra.update(shards=searcher.write(folder), format_version=SHARDED_FORMAT_VERSION)
    manifest = describe_build(plan, config, searcher, quality, model, provenance, placement.describe(), started, source, partial.store.has_lexical, selection, **extra)
    manifest.write(folder)
    publish_version(folder, out_dir)
    return manifest
