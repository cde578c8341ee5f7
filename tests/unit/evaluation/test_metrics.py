"""Ranking and beyond-accuracy metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from evaluation import metrics
from evaluation.metrics import relative_gain_ci


def test_target_ranks_are_one_based_and_pessimistic_about_ties() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0], [0.3, 0.2, 0.1, 0.0]])
    ranks = metrics.target_ranks(scores, np.array([2, 0, -1]))
    # row 0: 0.9 and the tied 0.5 come first -> 3; row 1: all tied -> last (4); row 2: unknown -> C+1
    assert ranks.tolist() == [3, 4, 5]


def test_ndcg_hr_mrr_hand_computed() -> None:
    ranks = np.array([1, 2, 11, 4])
    expected_ndcg = (1.0 + 1 / math.log2(3) + 0.0 + 1 / math.log2(5)) / 4
    assert metrics.ndcg_at_k(ranks, 10) == pytest.approx(expected_ndcg)
    assert metrics.hit_rate_at_k(ranks, 10) == pytest.approx(0.75)
    assert metrics.hit_rate_at_k(ranks, 1) == pytest.approx(0.25)
    assert metrics.mean_reciprocal_rank(ranks) == pytest.approx((1 + 0.5 + 1 / 11 + 0.25) / 4)


def test_top_k_orders_by_score_and_breaks_ties_by_column() -> None:
    scores = np.array([[0.2, 0.9, 0.2, 0.5, -np.inf]])
    assert metrics.top_k(scores, 3).tolist() == [[1, 3, 0]]


def test_coverage_exposure_and_popular_share() -> None:
    lists = np.array([[0, 1], [0, 2]])
    assert metrics.catalogue_coverage(lists, 10) == pytest.approx(0.3)
    assert metrics.exposure_counts(lists, 4).tolist() == [2, 1, 1, 0]
    assert metrics.popular_slot_share(lists, np.array([0])) == pytest.approx(0.5)
    popularity = np.array([5.0, 50.0, 1.0, 2.0] + [0.0] * 96)
    assert metrics.top_popular_columns(popularity, 0.01).tolist() == [1]  # 1% of 100 items


def test_gini_hand_computed() -> None:
    assert metrics.gini(np.array([1, 1, 1, 1])) == pytest.approx(0.0)
    # sorted x = (0, 0, 0, 4): sum (2i - n - 1) x_i = (2*4 - 5) * 4 = 12; / (n * total) = 12 / 16
    assert metrics.gini(np.array([0, 4, 0, 0])) == pytest.approx(0.75)
    assert metrics.gini(np.array([0, 0])) == 0.0


def test_intra_list_diversity_hand_computed() -> None:
    categories = [frozenset({"a", "b"}), frozenset({"b"}), frozenset({"c"}), frozenset()]
    # pairs of [0, 1, 2]: J(0,1) = 1/2, J(0,2) = 0, J(1,2) = 0 -> mean sim 1/6 -> ILD 5/6
    assert metrics.intra_list_diversity(np.array([[0, 1, 2]]), categories) == pytest.approx(5 / 6)
    # identical lists of same-genre items -> 0; the mean is over lists
    both = np.array([[0, 0], [1, 2]])
    assert metrics.intra_list_diversity(both, categories) == pytest.approx(0.5)
    # two items without categories count as identical
    assert metrics.intra_list_diversity(np.array([[3, 3]]), categories) == pytest.approx(0.0)


def test_novelty_is_higher_for_rarer_items() -> None:
    popularity = np.array([99.0, 1.0])
    assert metrics.novelty(np.array([[1]]), popularity, 100) > metrics.novelty(
        np.array([[0]]), popularity, 100
    )


@given(st.lists(st.integers(1, 50), min_size=1, max_size=40))
def test_metric_bounds(ranks_list: list[int]) -> None:
    ranks = np.array(ranks_list)
    ndcg, hr = metrics.ndcg_at_k(ranks, 10), metrics.hit_rate_at_k(ranks, 10)
    assert 0.0 <= ndcg <= hr <= 1.0
    assert 0.0 < metrics.mean_reciprocal_rank(ranks) <= 1.0


@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=30))
def test_gini_is_between_zero_and_one(values: list[float]) -> None:
    assert 0.0 <= metrics.gini(np.array(values)) <= 1.0


def test_gini_of_equal_values_is_zero_despite_rounding() -> None:
    # found by the property test above: five equal floats summed to -2.5e-17 before the clamp
    assert metrics.gini(np.full(5, 2.8475301514776747)) == 0.0


def test_relative_gain_ci_of_identical_rankings_is_exactly_zero() -> None:
    ranks = np.array([1, 3, 20, 2, 11, 5])
    gain, low, high = relative_gain_ci(ranks, ranks, 10, resamples=200)
    assert (gain, low, high) == (0.0, 0.0, 0.0)


def test_relative_gain_ci_brackets_the_gain_computed_by_hand() -> None:
    # model: ranks 1, 1, 3, 20 -> gains 1, 1, 0.5, 0; reference: 3, 3, 3, 3 -> 0.5 each
    model, reference = np.array([1, 1, 3, 20]), np.array([3, 3, 3, 3])
    gain, low, high = relative_gain_ci(model, reference, 10, resamples=500, seed=1)
    assert gain == pytest.approx(2.5 / 2.0 - 1.0)
    assert low <= gain <= high
    assert low >= -1.0  # a ratio of non-negative sums can fall no lower


def test_relative_gain_ci_narrows_with_more_requests_and_excludes_zero_for_a_clear_win() -> None:
    rng = np.random.default_rng(0)
    reference = rng.integers(1, 30, size=4000)
    better = np.maximum(reference - 2, 1)  # every target two places higher
    _, low_few, high_few = relative_gain_ci(better[:200], reference[:200], 10, resamples=500)
    _, low_many, high_many = relative_gain_ci(better, reference, 10, resamples=500)
    assert high_many - low_many < high_few - low_few
    assert low_many > 0.0


def test_relative_gain_ci_needs_paired_non_empty_requests() -> None:
    with pytest.raises(ValueError, match="same, non-empty"):
        relative_gain_ci(np.array([1, 2]), np.array([1]), 10)


def test_relative_gain_ci_by_group_resamples_whole_users() -> None:
    model, reference = np.array([1, 1, 3, 20]), np.array([3, 3, 3, 3])
    plain = relative_gain_ci(model, reference, 10, resamples=300, seed=2)
    # one group per request is the plain request bootstrap
    assert (
        relative_gain_ci(model, reference, 10, resamples=300, seed=2, groups=list("abcd")) == plain
    )
    # one user with every request: every resample is that user, the interval is the point
    gain, low, high = relative_gain_ci(model, reference, 10, resamples=300, groups=["u"] * 4)
    assert gain == low == high == pytest.approx(0.25)
    # two users, u with a clear win (gains 1, 1 vs 0.5, 0.5) and v with a clear loss (0.5, 0
    # vs 0.5, 0.5): resamples of users alone range from u twice (+100 %) to v twice (-50 %)
    gain, low, high = relative_gain_ci(
        model, reference, 10, resamples=300, groups=["u", "u", "v", "v"]
    )
    assert gain == pytest.approx(0.25)
    assert low == pytest.approx(-0.5) and high == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one group label per request"):
        relative_gain_ci(model, reference, 10, groups=["u"])
