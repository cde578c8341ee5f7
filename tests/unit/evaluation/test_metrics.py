"""Ranking and beyond-accuracy metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from evaluation import metrics


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
