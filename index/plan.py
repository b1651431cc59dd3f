"""Which FAISS index to build: index types, their parameters and memory estimates, and a size rule (pure functions, no FAISS).

Every decision here is a function of corpus size, dimension, memory budget and target
recall, so it can be tested and explained (`IndexPlan.reasons`) without building.
`--type auto` measures instead (index.selection) and falls back on the size rule.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from errors import UsageError

INDEX_TYPES = ("flat", "ivf", "ivfpq", "hnsw", "sq8", "binary", "binary-hnsw", "auto")
# Sign bits of the normalized vectors, compared by Hamming distance (one bit per dimension: 32x smaller than float32).
BINARY_TYPES = ("binary", "binary-hnsw")
DEFAULT_MAX_MEMORY = "2G"
DEFAULT_TARGET_RECALL = 0.95
DEFAULT_AUTO_BUDGET = 120.0  # seconds `auto` may spend measuring candidates (index.selection)

# Below this many vectors exact search is fast enough that approximation buys nothing.
EXACT_ENOUGH = 10_000
# Up to this many vectors an HNSW graph builds in minutes on a few cores; beyond, IVF trains and adds much faster.
HNSW_MAX_AUTO = 200_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
# k-means wants >= 39 training points per centroid (FAISS warns below); 256 per centroid is plenty.
MIN_POINTS_PER_CENTROID = 39
MAX_POINTS_PER_CENTROID = 256
# Bytes per id the id maps keep: IDMap2 stores the id (8) and a hash entry back (~32); IVF lists store 8.
ID_BYTES = {"flat": 40, "sq8": 40, "hnsw": 40, "ivf": 8, "ivfpq": 8, "binary": 40, "binary-hnsw": 40}

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}

# Where FAISS may run (see index.gpu): use a GPU when there is one, never, the first one, or all of them.
GPU_MODES = ("auto", "off", "one", "all")

@dataclass(frozen=True)
class IndexPlan:
    """A concrete index: type, FAISS factory string, build and search parameters, and why it was chosen."""

    index_type: str
    factory: str
    params: dict[str, int] = field(default_factory=dict)
    tunable: str | None = None  # "nprobe" / "efSearch": the search-time knob tuned to reach the target recall
    reasons: tuple[str, ...] = ()

    def training_size(self, n: int) -> int:
        """How many vectors to train on (0: no training needed)."""
        if self.index_type in ("ivf", "ivfpq"):
            points = max(self.params["nlist"] * MAX_POINTS_PER_CENTROID // 4, 2 ** self.params.get("nbits", 0) * MIN_POINTS_PER_CENTROID)
            return min(n, points)
        return min(n, 100_000) if self.index_type == "sq8" else 0


def parse_memory(text: str | int) -> int:
    """'2G', '512M', '1.5g', '300000' (bytes) → bytes; binary units (1G = 2**30)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(text).upper())
    if not match:
        raise UsageError(f"--max-memory {text!r}: expected a size like 2G, 512M or 100000 (bytes)")
    value = float(match.group(1)) * _UNITS[match.group(2)]
    if value < 1:
        raise UsageError(f"--max-memory {text!r}: must be positive")
    return int(value)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_target_recall(target: float) -> float:
    if not 0 < target <= 1:
        raise UsageError(f"--target-recall {target}: must be in (0, 1]")
    return target


def nlist_for(n: int, factor: float = 1.0) -> int:
    """IVF list count: a power of two near factor·2·sqrt(n), with at least 39 training points per list."""
    if n < 2 * MIN_POINTS_PER_CENTROID:
        return 1
    wanted = 2 ** round(math.log2(2 * math.sqrt(n) * factor))
    most = 2 ** int(math.log2(n // MIN_POINTS_PER_CENTROID))
    return max(1, min(wanted, most, 65_536))


def pq_nbits_for(n: int) -> int:
    """Bits per PQ sub-code: 8 when there are enough vectors to train 256 centroids, fewer on tiny corpora."""
    return max(1, min(8, int(math.log2(max(2, n // MIN_POINTS_PER_CENTROID)))))


def pq_m_for(dim: int, code_bytes: float, nbits: int) -> int | None:
    """Largest sub-quantizer count m dividing `dim` whose codes fit in `code_bytes` per vector (None: none fits)."""
    fitting = [m for m in range(1, dim + 1) if dim % m == 0 and m * nbits / 8 <= code_bytes and m <= 96 and dim // m >= 1]
    return max(fitting) if fitting else None


def graph_bytes(params: dict[str, int]) -> float:
    """Bytes per vector of an HNSW graph: level-0 links (2M ints), upper levels, offsets."""
    return 2 * params.get("M", HNSW_M) * 4 * 1.05 + 16


def check_binary_dim(dim: int) -> None:
    """Sign bits are packed eight to a byte: FAISS's binary indexes need a dimension divisible by 8."""
    if dim % 8:
        raise UsageError(f"binary index types need a dimension divisible by 8 (sign bits are packed into bytes); the model gives {dim}")


def estimate_bytes(plan: IndexPlan, n: int, dim: int) -> int:
    """Memory (≈ file size) of `plan` holding n vectors of dimension dim."""
    p, t = plan.params, plan.index_type
    per_vector = {
        "flat": 4 * dim,
        "sq8": dim,
        "hnsw": 4 * dim + graph_bytes(p),
        "ivf": 4 * dim,
        "ivfpq": math.ceil(p.get("m", 0) * p.get("nbits", 8) / 8),
        "binary": dim / 8,
        "binary-hnsw": dim / 8 + graph_bytes(p),
    }[t] + ID_BYTES[t]
    fixed = 0
    if t in ("ivf", "ivfpq"):
        fixed += p["nlist"] * dim * 4
    if t == "ivfpq":
        fixed += 2 ** p["nbits"] * dim * 4
    if t == "sq8":
        fixed += 2 * dim * 4
    return int(n * per_vector + fixed)


def plan_for_type(
    index_type: str, n: int, dim: int, reasons: tuple[str, ...] = (), code_bytes: float | None = None, nlist_factor: float = 1.0,
) -> IndexPlan:
    """The plan for an explicitly named type, with parameters sized to n and dim (IVF: `nlist_factor` times the usual list count)."""
    if index_type == "flat":
        return IndexPlan("flat", "IDMap2,Flat", {}, None, reasons)
    if index_type == "sq8":
        return IndexPlan("sq8", "IDMap2,SQ8", {}, None, reasons)
    if index_type == "hnsw":
        return IndexPlan("hnsw", f"IDMap2,HNSW{HNSW_M}", {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}, "efSearch", reasons)
    if index_type in BINARY_TYPES:
        check_binary_dim(dim)
        if index_type == "binary":
            return IndexPlan("binary", "BIDMap2,BFlat", {}, None, reasons)
        return IndexPlan("binary-hnsw", f"BIDMap2,BHNSW{HNSW_M}", {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}, "efSearch", reasons)
    nlist = nlist_for(n, nlist_factor)
    if index_type == "ivf":
        return IndexPlan("ivf", f"IVF{nlist},Flat", {"nlist": nlist}, "nprobe", reasons)
    if index_type == "ivfpq":
        nbits = pq_nbits_for(n)
        m = pq_m_for(dim, dim / 4 if code_bytes is None else code_bytes, nbits)  # default: 16x smaller than float32
        if m is None:
            raise UsageError(f"no IVF-PQ code fits in {code_bytes:.1f} bytes per vector (dimension {dim})")
        # "np": no polysemous training (FAISS's default for IVF-PQ re-orders the codes for Hamming filtering, which our
        # searches never use, and it took 5x the rest of the training: 188 s against 34 s on 16k STS-B vectors).
        return IndexPlan("ivfpq", f"IVF{nlist},PQ{m}x{nbits}np", {"nlist": nlist, "m": m, "nbits": nbits}, "nprobe", reasons)
    raise UsageError(f"unknown index type {index_type!r} (expected one of {', '.join(INDEX_TYPES)})")


def pq_code_budget(n: int, dim: int, max_memory: int) -> float:
    """Bytes per vector left for IVF-PQ codes once the coarse and PQ centroids and the ids of n vectors are in `max_memory`."""
    fixed = nlist_for(n) * dim * 4 + 2 ** pq_nbits_for(n) * dim * 4
    return (max_memory - fixed) / n - ID_BYTES["ivfpq"] if n else 0


def choose_plan(n: int, dim: int, max_memory: int, target_recall: float) -> IndexPlan:
    """The size rule: the type expected to be fastest that fits `max_memory` and can reach `target_recall`.

    What `auto` builds when nothing could be measured (index.selection), and the check, before
    any encoding, that some index fits the budget. Exact search when the corpus is small or exact recall is asked for; HNSW for
    mid-sized corpora (best latency, cheap to build); IVF-Flat beyond; 8-bit scalar
    quantization or IVF-PQ when float32 vectors do not fit the budget.
    """
    def fits(plan: IndexPlan) -> bool:
        return estimate_bytes(plan, n, dim) <= max_memory

    budget = f"budget {format_bytes(max_memory)}"
    flat = plan_for_type("flat", n, dim)
    flat_size = format_bytes(estimate_bytes(flat, n, dim))
    if fits(flat) and (n <= EXACT_ENOUGH or target_recall >= 0.999):
        why = f"{n} vectors: exact search is fast enough" if n <= EXACT_ENOUGH else f"target recall {target_recall} needs exact search"
        return plan_for_type("flat", n, dim, (why, f"float32 vectors need {flat_size}, within the {budget}"))
    hnsw = plan_for_type("hnsw", n, dim)
    if n <= HNSW_MAX_AUTO and fits(hnsw):
        return plan_for_type("hnsw", n, dim, (
            f"{n} vectors (≤ {HNSW_MAX_AUTO}): an HNSW graph gives the lowest latency and builds quickly",
            f"vectors + graph need {format_bytes(estimate_bytes(hnsw, n, dim))}, within the {budget}",
            f"efSearch tuned on held-out queries to reach recall@10 ≥ {target_recall}",
        ))
    ivf = plan_for_type("ivf", n, dim)
    if fits(ivf):
        why = f"{n} vectors: IVF scans ~nprobe/{ivf.params['nlist']} of the corpus per query and trains quickly"
        if n <= HNSW_MAX_AUTO:
            why = f"HNSW would need {format_bytes(estimate_bytes(hnsw, n, dim))}, over the {budget}"
        return plan_for_type("ivf", n, dim, (
            why, f"float32 vectors in {ivf.params['nlist']} lists need {format_bytes(estimate_bytes(ivf, n, dim))}, within the {budget}",
            f"nprobe tuned on held-out queries to reach recall@10 ≥ {target_recall}",
        ))
    sq8 = plan_for_type("sq8", n, dim)
    if n <= HNSW_MAX_AUTO and fits(sq8):
        return plan_for_type("sq8", n, dim, (
            f"float32 vectors need {format_bytes(estimate_bytes(ivf, n, dim))}, over the {budget}",
            f"8-bit scalar codes need {format_bytes(estimate_bytes(sq8, n, dim))} and keep recall high for {n} vectors",
        ))
    nbits = pq_nbits_for(n)
    code_bytes = pq_code_budget(n, dim, max_memory)
    if pq_m_for(dim, code_bytes, nbits) is None:
        smallest = estimate_bytes(plan_for_type("ivfpq", n, dim, code_bytes=nbits / 8), n, dim)
        raise UsageError(f"--max-memory {format_bytes(max_memory)} is too small for {n} vectors of dimension {dim} (the smallest index needs {format_bytes(smallest)})")
    plan = plan_for_type("ivfpq", n, dim, code_bytes=min(code_bytes, dim / 2))
    return plan_for_type("ivfpq", n, dim, (
        f"float32 vectors need {format_bytes(estimate_bytes(ivf, n, dim))}, over the {budget}",
        f"PQ codes of {plan.params['m'] * plan.params['nbits'] // 8} bytes per vector need {format_bytes(estimate_bytes(plan, n, dim))}",
        f"nprobe tuned on held-out queries toward recall@10 ≥ {target_recall} (PQ may cap recall below it)",
    ), code_bytes=min(code_bytes, dim / 2))


def search_param_candidates(plan: IndexPlan) -> list[int]:
    """Values of the tunable knob to try in increasing cost: powers of two."""
    if plan.tunable == "nprobe":
        nlist = plan.params["nlist"]
        return [2**i for i in range(int(math.log2(nlist)) + 1)] if nlist > 1 else [1]
    if plan.tunable == "efSearch":
        return [16, 32, 64, 128, 256, 512, 1024]
    return []


def tuning_query_count(n: int) -> int:
    """Held-out queries for tuning: up to 1,000, at most a tenth of the corpus, at least 1."""
    return max(1, min(1000, n // 10))
