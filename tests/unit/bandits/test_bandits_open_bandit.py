"""Open Bandit Dataset loader and cross-policy OPE on the real 10k-row sample files."""

from __future__ import annotations

import numpy as np
import pytest

from bandits.obd import cross_policy_estimates, empirical_policy, thompson_policy
from core.errors import NotFoundError, SchemaError
from interactions.open_bandit import load_open_bandit

pytestmark = pytest.mark.usefixtures("open_bandit_samples")  # in CI a missing dataset fails


@pytest.mark.parametrize(("campaign", "n_items"), [("all", 80), ("men", 34), ("women", 46)])
def test_loader_reads_both_policies(campaign, n_items):
    for policy in ("random", "bts"):
        log = load_open_bandit(policy, campaign)
        frame = log.rounds
        assert len(frame) == 10_000
        assert (log.n_items, log.n_positions) == (n_items, 3)
        assert set(frame["position"].unique()) == {0, 1, 2}
        assert frame["click"].isin([0, 1]).all()
        assert frame["propensity_score"].between(0, 1, inclusive="right").all()
        assert frame["timestamp_ms"].is_monotonic_increasing
        assert frame["timestamp_ms"].iloc[0] > 1_574_000_000_000  # late Nov 2019
        assert "user_feature_0" in frame.columns
        assert len(log.item_context) == n_items
    random_log = load_open_bandit("random", campaign)
    assert np.allclose(random_log.rounds["propensity_score"], 1.0 / n_items)


def test_loader_errors_are_clear(tmp_path):
    with pytest.raises(SchemaError):
        load_open_bandit("epsilon", "all")
    with pytest.raises(NotFoundError):
        load_open_bandit("bts", "all", tmp_path)


def test_bts_policy_estimates_are_distributions():
    bts = load_open_bandit("bts", "all")
    for policy in (
        empirical_policy(bts.rounds, bts.n_items, bts.n_positions),
        thompson_policy(bts.rounds, bts.n_items, bts.n_positions, n_draws=2_000),
    ):
        assert policy.shape == (3, 80)
        np.testing.assert_allclose(policy.sum(axis=1), 1.0)
        assert (policy > 0).any(axis=0).sum() > 40


def test_cross_policy_estimates_are_in_a_plausible_range():
    random_log, bts_log = load_open_bandit("random", "all"), load_open_bandit("bts", "all")
    est = cross_policy_estimates(random_log.rounds, bts_log.rounds, 80, 3, n_bootstrap=100)
    for direction, truth in (("bts_from_random", bts_log.ctr), ("random_from_bts", random_log.ctr)):
        for name in ("ipw", "snipw", "dr"):
            e = est[direction][name]
            assert e.ci_low <= e.value <= e.ci_high
            # a 10k sample is noisy, but not off by a factor of three
            assert truth / 3 < e.value < truth * 3, (direction, name, e, truth)
