"""`--type auto` by measurement: build every candidate index on a sample of the corpus vectors, tune it, keep the fastest.

The sample is made of whole regions of the vector space (`region_sample`), so neighbourhoods are as
dense as in the corpus. Each candidate whose full-size memory estimate fits --max-memory is built on
it with parameters sized as the full build would size them, its search knob tuned to the target
recall against exact search on held-out sample vectors, and all are then timed in turn. Queries/s
at full size: flat-like types and graphs are also built on a quarter of the regions and follow the
growth between the two sizes (`predict_qps`); IVF types add the time to find their nearest lists at
the full-size list count to the list scan measured on the sample (`predict_ivf_qps`). The winner
reaches the target at the highest predicted queries/s (within TIE: the smaller index).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import faiss
import numpy as np

from common.measures import exact_knn
from index.plan import MIN_POINTS_PER_CENTROID, IndexPlan, choose_plan, estimate_bytes, format_bytes, nlist_for, plan_for_type, pq_code_budget, pq_m_for, pq_nbits_for, tuning_query_count
from index.quality import Quality, Search, measure_qps, tune_and_measure
from index.rescore import DEFAULT_RESCORE, FloatStore
from index.vectors import VectorIndex

SAMPLE_PER_SECOND = 200  # sample vectors per second of budget (measured here: 9 candidates on 24,000 vectors of 384 dims in ~35 s)
MIN_SAMPLE, MAX_SAMPLE = 2_000, 50_000  # every candidate built on the sample stays in memory until the timing rounds
REGIONS = 16  # k-means cells the sample is made of (when the corpus is larger than the sample)
MAX_CELLS = 1024  # bounds the pass that assigns every vector to a region (n x cells inner products)
TIMING_ROUNDS = 5  # the best of 5 timings per candidate, taken in turn
TIE = 0.10  # predicted queries/s within 10 % of the best count as a tie, won by the smaller index: timing noise does not flip the choice
K = 10


@dataclass(frozen=True)
class Candidate:
    """One index type (and IVF list count, as a multiple of the usual one) that auto may pick."""

    index_type: str
    nlist_factor: float = 1.0

    @property
    def label(self) -> str:
        return self.index_type if self.nlist_factor == 1 else f"{self.index_type} nlist x{self.nlist_factor:g}"

    def plan(self, n: int, dim: int, reasons: tuple[str, ...] = (), code_bytes: float | None = None) -> IndexPlan:
        return plan_for_type(self.index_type, n, dim, reasons, code_bytes=code_bytes, nlist_factor=self.nlist_factor)

    @property
    def rescore(self) -> int:
        return DEFAULT_RESCORE if self.index_type.startswith("binary") else 0


# In the order they are measured: cheapest to build first, so a short budget still measures those.
CANDIDATES = (
    Candidate("flat"), Candidate("sq8"), Candidate("binary"), Candidate("ivf", 0.25), Candidate("ivf"), Candidate("ivf", 4.0),
    Candidate("ivfpq"), Candidate("hnsw"), Candidate("binary-hnsw"),
)


@dataclass
class Measured:
    """What auto found for one candidate: its plan and size at full scale, and (when measured) recall, queries/s and build time on the sample."""

    label: str
    index_type: str
    factory: str
    bytes: int
    fits: bool
    measured: bool = False
    recall_at_10: float | None = None
    reached: bool | None = None
    search_params: dict[str, int] = field(default_factory=dict)
    sample_qps: list[float] = field(default_factory=list)  # on the quarter and the whole sample (IVF: the whole only)
    predicted_qps: float | None = None
    build_seconds: float | None = None
    note: str = ""

    def as_dict(self) -> dict:
        record = asdict(self)
        for key in ("recall_at_10", "predicted_qps", "build_seconds"):
            if record[key] is not None:
                record[key] = round(record[key], 4 if key == "recall_at_10" else 1)
        record["sample_qps"] = [round(q, 1) for q in self.sample_qps]
        return record


@dataclass
class Selection:
    """The outcome: the winner's full-size plan and every candidate's record (the manifest's `choice.selection`)."""

    plan: IndexPlan
    candidates: list[Measured]
    sample: int
    queries: int
    budget_seconds: float
    seconds: float
    fallback: bool = False  # nothing was measured (the budget ran out, or a single vector): flat, or the size rule

    def as_dict(self) -> dict:
        """The manifest's `choice.selection` (the plan itself is the manifest's type, factory and params)."""
        return {"sample": self.sample, "queries": self.queries, "budget_seconds": self.budget_seconds, "seconds": round(self.seconds, 2),
                "fallback": self.fallback, "candidates": [c.as_dict() for c in self.candidates]}

    @classmethod
    def from_dict(cls, record: dict, plan: IndexPlan) -> Selection:
        """The selection a partial build saved (`as_dict`), with the plan it chose."""
        fields = {k: v for k, v in record.items() if k != "candidates"}
        return cls(plan, [Measured(**c) for c in record["candidates"]], **fields)


def sample_size(n: int, budget_seconds: float) -> int:
    """Vectors to measure on: more budget, larger sample (bounded), never more than the corpus."""
    return min(n, max(MIN_SAMPLE, min(MAX_SAMPLE, int(budget_seconds * SAMPLE_PER_SECOND))))


def ivfpq_code_bytes(n: int, dim: int, max_memory: int) -> float:
    """PQ code bytes per vector: a quarter of the dimension (16x smaller than float32), less when the budget needs it."""
    return max(min(dim / 4, pq_code_budget(n, dim, max_memory)), pq_nbits_for(n) / 8)


def full_plans(n: int, dim: int, max_memory: int) -> list[tuple[Candidate, IndexPlan, int]]:
    """Each candidate's plan at full size with its memory estimate (binary types only when the dimension allows)."""
    code_bytes = ivfpq_code_bytes(n, dim, max_memory)
    out = []
    for candidate in CANDIDATES:
        if candidate.index_type.startswith("binary") and dim % 8:
            continue
        if candidate.index_type == "ivfpq" and pq_m_for(dim, code_bytes, pq_nbits_for(n)) is None:
            continue
        plan = candidate.plan(n, dim, code_bytes=code_bytes if candidate.index_type == "ivfpq" else None)
        if candidate.index_type == "ivf" and candidate.nlist_factor != 1 and plan.params["nlist"] == nlist_for(n):
            continue  # too few vectors for another list count: the same index as plain ivf
        out.append((candidate, plan, estimate_bytes(plan, n, dim)))
    return out


def build_and_tune(plan: IndexPlan, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, target: float, rescore: int) -> tuple[Search, Quality, float]:
    """Build `plan` on `base` (ids = row numbers) and tune it to `target` on `queries` (never in `base`): its search, quality and build seconds."""
    started = time.perf_counter()
    vectors = VectorIndex.create(plan, base.shape[1])
    if vectors.needs_training():
        vectors.train(base[: plan.training_size(len(base))] if plan.training_size(len(base)) else base)
    ids = np.arange(len(base), dtype=np.int64)
    vectors.add(base, ids)
    if rescore:
        vectors.floats = FloatStore.of(base, ids)
        vectors.apply_search_params({"rescore": rescore})
    built = time.perf_counter() - started
    no_self = np.full(len(queries), -1, dtype=np.int64)
    search: Search = lambda q, k: vectors.search(q, k)[1]  # noqa: E731
    return search, tune_and_measure(plan, vectors.apply_search_params, search, queries, no_self, truth, target, K), built


def timed_in_turn(searches: dict[object, Search], queries: np.ndarray, rounds: int, min_seconds: float = 0.1) -> dict[object, float]:
    """Queries/s of each search on the batch `queries`: the best of `rounds` timings taken in turn, so drift (a CPU warming up,
    a neighbour's load) hits every candidate alike instead of favouring whichever was timed last."""
    best: dict[object, float] = {}
    for _ in range(rounds):
        for key, search in searches.items():
            best[key] = max(best.get(key, 0.0), measure_qps(search, queries, K, min_seconds))
    return best


def predict_qps(sizes: tuple[int, int], qps: tuple[float, float], n: int) -> float:
    """Queries/s at n from two measurements at the same density, cost ∝ size^b with b clamped to [0, 1]."""
    if n <= sizes[1] or sizes[0] >= sizes[1]:
        return qps[1]
    slope = math.log(qps[0] / qps[1]) / math.log(sizes[1] / sizes[0])
    return qps[1] * (sizes[1] / n) ** min(1.0, max(0.0, slope))


@dataclass(frozen=True)
class Sample:
    """Corpus rows to measure on: whole regions of the vector space, so neighbourhoods are as dense as in the full corpus.

    A random subset would thin every neighbourhood (a tenth of the vectors: the 10th neighbour lies where the 100th
    did), and an index tuned on it would look slower than it is. `quarter` (the first quarter of the regions) and
    `whole` give two sizes at the same density; the queries lie in the quarter and are held out of both.
    """

    queries: np.ndarray
    quarter: np.ndarray
    whole: np.ndarray

    @property
    def complete(self) -> bool:
        """True when `whole` is the entire corpus but the queries: nothing to extrapolate."""
        return len(self.quarter) == 0


def region_sample(vectors: np.ndarray, size: int, seed: int) -> Sample:
    """About `size` rows of `vectors` in randomly chosen k-means cells (REGIONS of them), or all rows when the corpus is that small."""
    n = len(vectors)
    rng = np.random.default_rng(seed)
    if n <= size:
        queries = np.sort(rng.choice(n, size=max(1, min(tuning_query_count(n), n // 2)), replace=False))
        return Sample(queries, np.zeros(0, dtype=np.int64), np.setdiff1d(np.arange(n), queries))
    cells = min(MAX_CELLS, max(2, round(REGIONS * n / size)))
    # Coarse regions are enough: 32 points per centroid, 10 iterations (FAISS's 39-point warning is for good centroids).
    kmeans = faiss.Kmeans(vectors.shape[1], cells, niter=10, seed=seed, spherical=True, min_points_per_centroid=1, max_points_per_centroid=32)
    kmeans.train(np.asarray(vectors[np.sort(rng.choice(n, size=min(n, cells * 32), replace=False))], dtype=np.float32))
    cell = np.concatenate([kmeans.index.search(np.asarray(vectors[i : i + 65_536], dtype=np.float32), 1)[1].ravel() for i in range(0, n, 65_536)])
    order = rng.permutation(cells)
    taken = np.cumsum(np.bincount(cell, minlength=cells)[order])
    whole = np.flatnonzero(np.isin(cell, order[: np.searchsorted(taken, size) + 1]))
    quarter = np.flatnonzero(np.isin(cell, order[: np.searchsorted(taken, size / 4) + 1]))
    queries = np.sort(rng.choice(quarter, size=max(1, min(tuning_query_count(len(whole)), len(quarter) // 2)), replace=False))
    return Sample(queries, np.setdiff1d(quarter, queries), np.setdiff1d(whole, queries))


def coarse_search(base: np.ndarray, nlist: int) -> Search:
    """IVF's first step with `nlist` lists, to time: finding the nearest of nlist centroids (sample rows stand in for them)."""
    centroids = faiss.IndexFlatIP(base.shape[1])
    centroids.add(np.ascontiguousarray(np.resize(base, (nlist, base.shape[1]))))
    return lambda q, k: centroids.search(q, min(k, nlist))[1]


def predict_ivf_qps(qps: float, size: int, nlist: int, n: int, full_nlist: int, coarse: Callable[[int], float]) -> float:
    """IVF queries/s at n vectors in `full_nlist` lists, from `qps` measured on `size` sample vectors in `nlist` lists.

    A query finds its nearest lists (timed at both list counts: `coarse`), then scans them; at the same density the
    scan grows with the list length, n / full_nlist against size / nlist. A power law fitted between two sample
    sizes misses this: the sample's list count is capped by its training points, the full build's is not.
    """
    scan = max(1 / qps - coarse(nlist), 0.0)
    return 1 / (coarse(full_nlist) + scan * (n / full_nlist) / (size / nlist))


def select_plan(
    vectors: np.ndarray, max_memory: int, target: float, budget_seconds: float, seed: int = 0,
    progress: Callable[[str, int], None] = lambda label, total: None,
) -> Selection:
    """Measure every fitting candidate on a region sample of `vectors` (the corpus, e.g. memory-mapped) until the budget ends; the winner's plan."""
    started = time.perf_counter()
    n, dim = vectors.shape
    nothing = np.zeros(0, dtype=np.int64)
    sample = region_sample(vectors, sample_size(n, budget_seconds), seed) if budget_seconds > 0 and n > 1 else Sample(nothing, nothing, nothing)
    queries = np.asarray(vectors[sample.queries], dtype=np.float32)
    bases = [np.asarray(vectors[rows], dtype=np.float32) for rows in ((sample.whole,) if sample.complete else (sample.quarter, sample.whole))]
    truths = [exact_knn(queries, base, K + 1)[1] for base in bases] if len(sample.whole) else []
    records: list[Measured] = []
    searches: dict[tuple[str, int], Search] = {}  # (label, size) -> search of the candidate built on that many sample vectors
    ivf_lists: dict[str, tuple[int, int]] = {}  # label -> (list count on the sample, at full size)
    plans = full_plans(n, dim, max_memory)
    for candidate, plan, size_bytes in plans:
        record = Measured(candidate.label, candidate.index_type, plan.factory, size_bytes, size_bytes <= max_memory)
        records.append(record)
        record.note = left_out(record, plan, max_memory, time.perf_counter() - started >= budget_seconds, len(sample.whole))
        if record.note:
            continue
        progress(candidate.label, sum(size <= max_memory for _, _, size in plans))
        code_bytes = plan.params["m"] * plan.params["nbits"] / 8 if candidate.index_type == "ivfpq" else None
        ivf = "nlist" in plan.params
        for base, truth in list(zip(bases, truths))[-1 if ivf else 0 :]:  # IVF: the whole sample only (its cost is modelled, see predict_ivf_qps)
            sample_plan = candidate.plan(len(base), dim, code_bytes=code_bytes)
            searches[candidate.label, len(base)], quality, build = build_and_tune(sample_plan, base, queries, truth, target, candidate.rescore)
        record.measured, record.recall_at_10, record.reached = True, quality.recall_at_10, quality.recall_at_10 >= target
        record.search_params, record.build_seconds = quality.search_params, build
        record.note = "" if record.reached else f"recall below {target}"
        if ivf:
            ivf_lists[candidate.label] = (sample_plan.params["nlist"], plan.params["nlist"])
    coarse = {("coarse", nlist): coarse_search(bases[-1], nlist) for lists in ivf_lists.values() for nlist in lists}
    qps = timed_in_turn({**searches, **coarse}, queries, TIMING_ROUNDS)
    for record in records:
        if record.measured:
            record.sample_qps = [qps[key] for key in searches if key[0] == record.label]
            record.predicted_qps = predict(record, qps, ivf_lists.get(record.label), [len(b) for b in bases], n, sample.complete)
    seconds = time.perf_counter() - started
    size, held_out = len(sample.whole) + len(sample.queries), len(sample.queries)
    winner = pick(records, target)
    if winner is None:
        why = "a single vector: nothing to measure" if n == 1 and budget_seconds > 0 else f"--auto-budget {budget_seconds:g} s ran out before any candidate was measured"
        return Selection(fallback_plan(records, n, dim, max_memory, target, why), records, size, held_out, budget_seconds, seconds, fallback=True)
    candidate = next(c for c, _, _ in plans if c.label == winner.label)
    code_bytes = ivfpq_code_bytes(n, dim, max_memory) if candidate.index_type == "ivfpq" else None
    plan = candidate.plan(n, dim, explain(winner, records, target, n, size, seconds), code_bytes=code_bytes)
    return Selection(plan, records, size, held_out, budget_seconds, seconds)


def left_out(record: Measured, plan: IndexPlan, max_memory: int, budget_spent: bool, sample: int) -> str:
    """Why a candidate is not measured ('' when it is): over the memory budget, out of time, or a sample too small for it."""
    if not record.fits:
        return f"needs {format_bytes(record.bytes)}, over --max-memory {format_bytes(max_memory)}"
    if budget_spent:
        return "not measured: --auto-budget spent"
    if not sample:
        return "not measured: one vector, nothing to search"
    if "nlist" in plan.params and sample < 2 * MIN_POINTS_PER_CENTROID:
        return "not measured: too few sample vectors to train it"
    return ""


def predict(record: Measured, qps: dict, lists: tuple[int, int] | None, sizes: list[int], n: int, complete: bool) -> float:
    """A measured candidate's queries/s at n: as measured when the sample is the corpus, else modelled (IVF) or extrapolated."""
    if complete:
        return record.sample_qps[-1]
    if lists is not None:
        nlist, full_nlist = lists
        return predict_ivf_qps(record.sample_qps[-1], sizes[-1], nlist, n, full_nlist, lambda k: 1 / qps["coarse", k])
    return predict_qps((sizes[0], sizes[1]), (record.sample_qps[0], record.sample_qps[1]), n)


def pick(records: list[Measured], target: float) -> Measured | None:
    """The measured candidate that reaches `target` at the highest predicted queries/s (a tie within TIE: the smaller index); None if none was measured.

    When none reaches the target, the fastest of those with the best recall.
    """
    measured = [r for r in records if r.measured]
    if not measured:
        return None
    pool = [r for r in measured if r.reached]
    if not pool:
        best_recall = max(r.recall_at_10 for r in measured)
        pool = [r for r in measured if r.recall_at_10 >= best_recall - 0.005]
    fastest = max(r.predicted_qps for r in pool)
    ties = [r for r in pool if r.predicted_qps >= (1 - TIE) * fastest]
    return min(ties, key=lambda r: (r.bytes, -r.predicted_qps))


def explain(winner: Measured, records: list[Measured], target: float, n: int, sample: int, seconds: float) -> tuple[str, ...]:
    """The reasons auto records for its choice: what was measured, what the winner reached, the runner-up, what did not fit."""
    measured = [r for r in records if r.measured]
    reasons = [
        f"measured {len(measured)} of {len(records)} candidates on {sample} sample vectors in {seconds:.1f} s "
        f"(each tuned to recall@10 >= {target} vs exact search on held-out sample vectors; queries/s at {n} predicted from the sample)",
        f"{winner.label}: recall@10 {winner.recall_at_10:.3f}" + ("" if winner.reached else f" (target {target} not reached by any candidate: best recall kept)")
        + f", {winner.predicted_qps:,.0f} queries/s predicted for {n} vectors, {format_bytes(winner.bytes)}",
    ]
    others = sorted((r for r in measured if r is not winner and r.reached == winner.reached), key=lambda r: -r.predicted_qps)
    if others:
        ratio = others[0].predicted_qps / winner.predicted_qps
        why = f" (within {TIE:.0%}: the smaller index wins)" if ratio > 1 else ""
        reasons.append(f"next: {others[0].label} at {others[0].predicted_qps:,.0f} queries/s ({ratio:.2f}x){why}")
    too_big = [r.label for r in records if not r.fits]
    if too_big:
        reasons.append(f"over --max-memory: {', '.join(too_big)}")
    return tuple(reasons)


def fallback_plan(records: list[Measured], n: int, dim: int, max_memory: int, target: float, why: str) -> IndexPlan:
    """No candidate measured (`why`): exact search (flat) when it fits, else the size rule of `choose_plan`."""
    if records and records[0].index_type == "flat" and records[0].fits:
        return plan_for_type("flat", n, dim, (f"{why}: built flat (exact search)",))
    plan = choose_plan(n, dim, max_memory, target)
    return replace(plan, reasons=(f"{why} and flat needs {format_bytes(records[0].bytes)}: chose by corpus size", *plan.reasons))


def candidate_table(record: dict, factory: str) -> list[str]:
    """`index info`'s lines for a manifest's `choice.selection`: one row per candidate, the winner (`factory`) marked *."""
    rows = record["candidates"]
    measured = sum(r["measured"] for r in rows)
    lines = [f"auto measured {measured} of {len(rows)} candidates on {record['sample']} sample vectors ({record['queries']} held out as queries) "
             f"in {record['seconds']:.1f} s (--auto-budget {record['budget_seconds']:g} s):",
             f"    {'candidate':<17} {'recall@10':>9} {'QPS sample':>11} {'QPS at n':>10} {'memory':>10} {'build s':>7}  note"]
    for r in rows:
        mark = "* " if r["factory"] == factory and not record["fallback"] else "  "
        if r["measured"]:
            numbers = f"{r['recall_at_10']:>9.3f} {r['sample_qps'][-1]:>11,.0f} {r['predicted_qps']:>10,.0f}"
        else:
            numbers = f"{'-':>9} {'-':>11} {'-':>10}"
        build = f"{r['build_seconds']:>7.2f}" if r["build_seconds"] is not None else f"{'-':>7}"
        lines.append(f"  {mark}{r['label']:<17} {numbers} {format_bytes(r['bytes']):>10} {build}  {r['note']}".rstrip())
    return lines
