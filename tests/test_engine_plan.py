"""Index engine heuristics and recall@k as pure functions: no index is built here."""

from __future__ import annotations

import numpy as np
import pytest

from errors import UsageError
from index.plan import (
    EXACT_ENOUGH, HNSW_MAX_AUTO, choose_plan, estimate_bytes, nlist_for, parse_memory, plan_for_type, pq_m_for, search_param_candidates,
)
from common.measures import drop_self, recall_at_k
from index.quality import recall_plateaued

G = 2**30


@pytest.mark.parametrize("text,expected", [("2G", 2 * G), ("512M", 512 * 2**20), ("1.5g", int(1.5 * G)), ("300000", 300_000), ("64KiB", 64 * 1024), (1000, 1000)])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["two gigs", "-1G", "", "5X"])
def test_parse_memory_rejects_nonsense(text):
    with pytest.raises(UsageError, match="--max-memory"):
        parse_memory(text)


def test_nlist_grows_with_sqrt_n_and_keeps_39_points_per_list():
    assert [nlist_for(n) for n in (10, 1_000, 100_000, 1_000_000)] == [1, 16, 512, 2048]
    for n in (100, 5_000, 77_777, 3_000_000):
        assert n // nlist_for(n) >= 39


def test_memory_estimates_order_the_types_as_expected():
    n, d = 1_000_000, 384
    size = {t: estimate_bytes(plan_for_type(t, n, d), n, d) for t in ("flat", "ivf", "hnsw", "sq8", "ivfpq")}
    assert size["ivfpq"] < size["sq8"] < size["flat"] < size["hnsw"]
    assert size["flat"] == pytest.approx(n * d * 4, rel=0.05)
    assert size["ivf"] == pytest.approx(n * d * 4, rel=0.05)
    assert size["sq8"] == pytest.approx(n * (d + 40), rel=0.01)  # 1 byte per dimension + the id maps


def test_pq_m_is_the_largest_divisor_that_fits():
    assert pq_m_for(384, 96, 8) == 96
    assert pq_m_for(384, 50, 8) == 48
    assert pq_m_for(384, 0.5, 8) is None


def test_auto_small_corpus_is_exact():
    plan = choose_plan(EXACT_ENOUGH, 384, 2 * G, 0.95)
    assert plan.index_type == "flat" and plan.tunable is None and "exact search is fast enough" in plan.reasons[0]


def test_auto_exact_recall_target_asks_for_flat_when_it_fits():
    assert choose_plan(500_000, 384, 2 * G, 1.0).index_type == "flat"


def test_auto_mid_corpus_is_hnsw_and_large_corpus_is_ivf():
    assert choose_plan(50_000, 384, 2 * G, 0.95).index_type == "hnsw"
    large = choose_plan(1_000_000, 384, 2 * G, 0.95)
    assert (large.index_type, large.params["nlist"], large.tunable) == ("ivf", 2048, "nprobe")
    assert choose_plan(HNSW_MAX_AUTO + 1, 384, 2 * G, 0.95).index_type == "ivf"


def test_auto_tight_budget_falls_back_to_compressed_types_that_fit():
    # 100k x 384 float32 is ~147 MiB: 60 MiB allows 8-bit codes, 20 MiB only PQ.
    assert choose_plan(100_000, 384, 60 * 2**20, 0.95).index_type == "sq8"
    pq = choose_plan(1_000_000, 384, 200 * 2**20, 0.95)
    assert pq.index_type == "ivfpq"
    assert estimate_bytes(pq, 1_000_000, 384) <= 200 * 2**20
    assert 384 % pq.params["m"] == 0 and pq.params["nbits"] == 8


def test_auto_every_choice_fits_its_budget():
    for n in (1_000, 30_000, 150_000, 600_000, 2_000_000):
        for budget in (64 * 2**20, 512 * 2**20, 2 * G, 16 * G):
            try:
                plan = choose_plan(n, 384, budget, 0.95)
            except UsageError:
                continue
            assert estimate_bytes(plan, n, 384) <= budget, (n, budget, plan)


def test_auto_budget_too_small_for_anything_is_a_usage_error():
    with pytest.raises(UsageError, match="too small"):
        choose_plan(1_000_000, 384, 1_000_000, 0.95)


def test_tuning_candidates_stop_at_nlist():
    assert search_param_candidates(plan_for_type("ivf", 100_000, 64)) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert search_param_candidates(plan_for_type("hnsw", 100_000, 64))[0] == 16
    assert search_param_candidates(plan_for_type("flat", 100_000, 64)) == []


def test_recall_at_k_counts_overlap_and_ignores_padding():
    true = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert recall_at_k(true, true, 4) == 1.0
    assert recall_at_k(np.array([[1, 2, 9, 9], [8, 7, -1, -1]]), true, 4) == pytest.approx((0.5 + 0.5) / 2)
    assert recall_at_k(np.array([[4, 3, 2, 1], [0, 0, 0, 0]]), true, 2) == pytest.approx(0.0)
    assert recall_at_k(np.array([[2, 1, 0, 0]]), np.array([[1, 2, 3, 4]]), 2) == 1.0


def test_drop_self_removes_the_query_id_and_pads():
    assert drop_self(np.array([[7, 1, 2], [3, 4, 5]]), np.array([7, 9]), 2).tolist() == [[1, 2], [3, 4]]
    assert drop_self(np.array([[7, -1, -1]]), np.array([7]), 2).tolist() == [[-1, -1]]


def test_recall_plateau_needs_two_flat_doublings_in_a_row():
    assert not recall_plateaued([0.50, 0.50])  # too few steps to tell
    assert not recall_plateaued([0.50, 0.70, 0.701])  # one flat step after a real gain
    assert recall_plateaued([0.50, 0.70, 0.701, 0.7015])
    assert not recall_plateaued([0.50, 0.501, 0.60])  # a late gain restarts the count
