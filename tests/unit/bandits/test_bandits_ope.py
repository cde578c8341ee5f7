"""Off-policy estimators recover a known policy value on synthetic logs."""

from __future__ import annotations

import numpy as np
import pytest

from bandits.attribution import AttributionConfig
from bandits.impression_ope import attributed_rewards, evaluate_impression_log
from bandits.ope import LoggedRounds, context_free_dist, evaluate
from events.models import Impression, ImpressionItem, Interaction

T0 = 1_700_000_000_000


def _synthetic(n: int, seed: int):
    rng = np.random.default_rng(seed)
    n_actions, n_positions = 6, 2
    q = np.outer([1.0, 0.6], [0.05, 0.1, 0.15, 0.2, 0.3, 0.4])  # (positions, actions)
    logging = np.array([[0.3, 0.25, 0.2, 0.1, 0.1, 0.05], [0.05, 0.1, 0.1, 0.2, 0.25, 0.3]])
    target = np.array([[0.0, 0.0, 0.1, 0.1, 0.3, 0.5], [0.5, 0.3, 0.1, 0.1, 0.0, 0.0]])
    position = rng.integers(0, n_positions, size=n)
    action = np.array([rng.choice(n_actions, p=logging[k]) for k in position])
    reward = (rng.random(n) < q[position, action]).astype(float)
    rounds = LoggedRounds(
        action, position, reward, logging[position, action], n_actions, n_positions
    )
    true_value = float(np.mean([(target[k] * q[k]).sum() for k in range(n_positions)]))
    return rounds, context_free_dist(target, position), true_value


@pytest.mark.parametrize("seed", [0, 1])
def test_estimators_cover_the_true_value(seed):
    rounds, dist, truth = _synthetic(20_000, seed)
    estimates = evaluate(rounds, dist, n_bootstrap=300, seed=seed)
    for name in ("ipw", "snipw", "dr"):
        est = estimates[name]
        assert est.ci_low <= truth <= est.ci_high, (name, est, truth)
        assert abs(est.value - truth) / truth < 0.1, (name, est, truth)


def test_on_policy_ips_equals_the_logged_mean():
    rounds, _, _ = _synthetic(5_000, 3)
    logging = np.zeros((len(rounds), rounds.n_actions))
    logging[np.arange(len(rounds)), rounds.action] = rounds.pscore
    # target = logging policy restricted to the logged action's propensity: weights are all 1
    estimates = evaluate(rounds, logging, n_bootstrap=50, seed=0)
    assert estimates["ipw"].value == pytest.approx(rounds.reward.mean())
    assert estimates["snipw"].value == pytest.approx(rounds.reward.mean())


def test_bootstrap_is_seeded():
    rounds, dist, _ = _synthetic(2_000, 4)
    assert evaluate(rounds, dist, n_bootstrap=100, seed=5) == evaluate(
        rounds, dist, n_bootstrap=100, seed=5
    )


def test_rejects_bad_propensities():
    with pytest.raises(ValueError):
        LoggedRounds(np.array([0]), np.array([0]), np.array([1.0]), np.array([0.0]), 1, 1)


# -- the project's own impression log ---------------------------------------------------------
ITEMS = ["a", "b", "c", "d"]
CLICK_RATE = {"a": 0.05, "b": 0.1, "c": 0.2, "d": 0.35}


def _impression_log(n: int, seed: int):
    """Uniform logging policy over 4 items in one slot; clicks 1 s after the impression."""
    rng = np.random.default_rng(seed)
    impressions, interactions = [], []
    for r in range(n):
        t = T0 + r * 1000
        item = ITEMS[rng.integers(len(ITEMS))]
        impressions.append(
            Impression(
                request_id=f"r{r}",
                user_id=f"u{r % 50}",
                event_time=t,
                model_version="m",
                items=(
                    ImpressionItem(
                        item_id=item, position=0, score=0.0, source="s", propensity=0.25
                    ),
                ),
            )
        )
        if rng.random() < CLICK_RATE[item]:
            interactions.append(
                Interaction(
                    event_id=f"e{r}",
                    event_type="click",
                    user_id=f"u{r % 50}",
                    item_id=item,
                    event_time=t + 1000,
                    request_id=f"r{r}",
                )
            )
        elif rng.random() < 0.2:
            interactions.append(
                Interaction(
                    event_id=f"d{r}",
                    event_type="dismiss",
                    user_id=f"u{r % 50}",
                    item_id=item,
                    event_time=t + 500,
                    request_id=f"r{r}",
                )
            )
    return impressions, interactions


def test_impression_log_ope_recovers_a_known_policy_value():
    impressions, interactions = _impression_log(8_000, seed=11)
    config = AttributionConfig(window_ms=60_000, allowed_lateness_ms=0)
    rewards = attributed_rewards(impressions, interactions, config)
    assert sum(rewards.values()) == sum(1 for e in interactions if e.event_type == "click")

    def always_d(impression, position):
        return {"d": 1.0}

    estimates = evaluate_impression_log(
        impressions, interactions, always_d, config=config, n_bootstrap=300, seed=0
    )
    truth = CLICK_RATE["d"]
    for name in ("ipw", "snipw", "dr"):
        assert estimates[name].ci_low <= truth <= estimates[name].ci_high, (name, estimates[name])
