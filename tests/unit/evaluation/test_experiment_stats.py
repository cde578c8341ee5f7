"""The read-out statistics against hand-computed cases, and the delta method against a bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.experiment_stats import (
    compare_exposure,
    compare_ratios,
    exposure_estimates,
    exposure_matrix,
    impression_winner,
    interleaving_preference,
    ratio_estimate,
    ratio_variance,
    sample_ratio_mismatch,
)
from evaluation.metrics import gini


def test_delta_method_variance_of_a_ratio_by_hand():
    # x = clicks per user, y = slots per user. R = 4/8. Sample moments (ddof 1): s_x² = 7/3,
    # s_y² = 4/3, s_xy = 5/3; Var = (7/3 − 2·½·5/3 + ¼·4/3) / (3 · (8/3)²) = 1 / (64/3) = 3/64.
    ratio, variance = ratio_variance(np.array([1, 0, 3]), np.array([2, 2, 4]))
    assert ratio == pytest.approx(0.5)
    assert variance == pytest.approx(3 / 64)
    estimate = ratio_estimate(np.array([1, 0, 3]), np.array([2, 2, 4]), level=0.95)
    assert estimate.se == pytest.approx(math.sqrt(3 / 64))
    assert estimate.ci_low == pytest.approx(0.5 - 1.959964 * math.sqrt(3 / 64), rel=1e-6)
    assert estimate.users == 3


def test_z_test_of_two_ratios_by_hand():
    control = (np.array([1, 0, 3]), np.array([2, 2, 4]))  # R 0.5, Var 3/64
    treatment = (np.array([2, 2, 2]), np.array([2, 2, 2]))  # R 1.0, Var 0 (no spread)
    c = compare_ratios(control, treatment)
    assert c.difference == pytest.approx(0.5)
    assert c.z == pytest.approx(0.5 / math.sqrt(3 / 64))
    assert c.p_value == pytest.approx(2 * (1 - 0.9893), abs=2e-3)  # z = 2.309
    assert c.relative == pytest.approx(1.0)


def test_identical_arms_are_not_different():
    arm = (np.array([1, 2, 0, 4]), np.array([5, 5, 5, 5]))
    c = compare_ratios(arm, arm)
    assert c.difference == 0 and c.z == 0 and c.p_value == pytest.approx(1.0)


def test_delta_method_agrees_with_a_user_level_cluster_bootstrap():
    rng = np.random.default_rng(3)
    n = 2_000
    slots = rng.integers(1, 30, size=n)
    taste = rng.beta(0.5, 5.0, size=n)  # users differ a lot: slots within a user correlate
    clicks = rng.binomial(slots, taste)
    _, variance = ratio_variance(clicks, slots)
    draws = []
    for _ in range(2_000):
        pick = rng.integers(0, n, size=n)
        draws.append(clicks[pick].sum() / slots[pick].sum())
    assert math.sqrt(variance) == pytest.approx(np.std(draws), rel=0.08)
    # ...and a binomial interval over slots, which ignores the users, is far too narrow
    p = clicks.sum() / slots.sum()
    assert math.sqrt(p * (1 - p) / slots.sum()) < 0.6 * math.sqrt(variance)


def test_srm_flags_a_50_50_experiment_logged_55_45_over_10k_users():
    check = sample_ratio_mismatch({"a": 5_500, "b": 4_500}, {"a": 1, "b": 1})
    assert check.chi2 == pytest.approx(100.0)  # (500² / 5000) × 2
    assert check.flagged and check.p_value < 1e-20


def test_srm_accepts_a_50_50_split_and_a_90_10_one():
    assert not sample_ratio_mismatch({"a": 5_000, "b": 5_000}, {"a": 1, "b": 1}).flagged
    assert not sample_ratio_mismatch({"a": 5_020, "b": 4_980}, {"a": 1, "b": 1}).flagged
    check = sample_ratio_mismatch({"big": 9_010, "small": 990}, {"big": 90, "small": 10})
    assert not check.flagged
    assert check.expected_share == {"big": 0.9, "small": 0.1}


def test_srm_zero_weight_arms_take_no_part_unless_randomised_users_land_there():
    weights = {"a": 1, "b": 1, "qa": 0}
    assert not sample_ratio_mismatch({"a": 500, "b": 500}, weights).flagged
    assert sample_ratio_mismatch({"a": 500, "b": 500, "qa": 3}, weights).flagged
    assert sample_ratio_mismatch({"a": 500, "b": 500, "renamed": 3}, weights).flagged


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2_000), st.integers(0, 2_000))
def test_srm_p_value_is_a_probability_and_a_perfect_split_never_flags(a, b):
    check = sample_ratio_mismatch({"a": a, "b": b}, {"a": 1, "b": 1})
    assert 0.0 <= check.p_value <= 1.0
    if a == b:
        assert not check.flagged


@pytest.mark.parametrize(
    ("clicked", "expected"),
    [
        ({0}, "A"),
        ({1}, "B"),
        ({0, 1}, "tie"),
        ({2}, None),  # a pinned/explored slot: nobody's credit
        ({0, 3, 4}, "A"),  # A at 0 and 4, B at 3
        ({1, 3, 2}, "B"),
        (set(), None),
        ({9}, None),  # outside the slate
    ],
)
def test_team_draft_credit_by_hand(clicked, expected):
    teams = ("A", "B", None, "B", "A")  # the impression context "AB-BA"
    assert impression_winner(teams, frozenset(clicked)) == expected


def test_sign_test_of_wins_by_hand():
    # 15 wins for A, 5 for B, 4 ties: p = 2 · P(X >= 15 | n = 20, ½) = 2 · 21700 / 2^20
    outcomes = ["A"] * 15 + ["B"] * 5 + ["tie"] * 4
    pref = interleaving_preference(outcomes)
    assert (pref.wins_a, pref.wins_b, pref.ties, pref.impressions) == (15, 5, 4, 24)
    assert pref.p_value == pytest.approx(2 * 21_700 / 2**20)
    assert pref.preference == pytest.approx(10 / 24)
    assert pref.win_share_a == pytest.approx(0.75)
    assert pref.win_share_ci_low < 0.75 < pref.win_share_ci_high


def test_no_decisive_impression_is_no_evidence():
    pref = interleaving_preference(["tie", "tie"])
    assert pref.p_value == 1.0 and pref.preference == 0.0


def test_coverage_and_gini_of_exposure_by_hand():
    # two users, four items: user 0 saw item 0 twice and item 1 once; user 1 saw item 0 once.
    matrix = exposure_matrix([{0: 2, 1: 1}, {0: 1}], n_items=4)
    est = exposure_estimates(matrix, n_bootstrap=200, seed=1)
    assert est["coverage"].value == pytest.approx(0.5)  # items 0 and 1 of 4
    assert est["gini"].value == pytest.approx(gini(np.array([3, 1, 0, 0])))
    assert est["coverage"].ci_low <= 0.5 <= est["coverage"].ci_high


def test_exposure_comparison_at_equal_size_sees_a_concentrated_arm():
    rng = np.random.default_rng(0)
    spread = [{int(i): 1 for i in rng.choice(100, size=10, replace=False)} for _ in range(300)]
    narrow = [{int(i): 1 for i in rng.choice(12, size=10, replace=False)} for _ in range(300)]
    c = compare_exposure(exposure_matrix(spread, 100), exposure_matrix(narrow, 100), 300)
    assert c.users_per_draw == 300
    assert c.coverage.ci_high < 0  # the narrow arm covers less
    assert c.gini.ci_low > 0  # and concentrates exposure
