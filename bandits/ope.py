"""Off-policy evaluation of slot-level policies: IPS, self-normalised IPS, doubly robust (+ DM).

A logged round ``i`` is one slot of one served slate: the action (item index) ``a_i`` the logging
policy put at position ``k_i``, its reward ``r_i`` and its logging propensity
``p_i = pi_0(a_i | x_i, k_i)``. The target policy is given as its full action distribution per
round, ``action_dist[i, a] = pi_e(a | x_i, k_i)`` (the DR direct-method term needs all of it).

* IPS:   ``mean(w_i r_i)`` with ``w_i = pi_e(a_i|·) / p_i``
* SNIPS: ``sum(w_i r_i) / sum(w_i)``
* DR:    ``mean(sum_a pi_e(a|·) q(a, k_i) + w_i (r_i - q(a_i, k_i)))``
* DM:    ``mean(sum_a pi_e(a|·) q(a, k_i))`` (reported for reference)

Reward model ``q``: per item × position click rate, shrunk towards the position's mean with
``prior_strength`` pseudo-observations (most cells have only a few dozen rows), **cross-fitted**:
rows of fold ``f`` are scored by a model fitted on the other folds (seeded split), so the
residual term stays unbiased.

Confidence intervals: percentile bootstrap over rounds (``n_bootstrap`` resamples, seeded,
``1 - level`` two-sided). The cross-fitted predictions are held fixed across resamples, which is
harmless for IPS/SNIPS/DR (the model only enters as a control variate) but makes the DM interval
far too narrow: treat DM's CI as not meaningful.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

ESTIMATORS = ("ipw", "snipw", "dr", "dm")


@dataclass(frozen=True)
class LoggedRounds:
    action: np.ndarray  # (n,) int, item index in [0, n_actions)
    position: np.ndarray  # (n,) int, 0-based slot
    reward: np.ndarray  # (n,) float
    pscore: np.ndarray  # (n,) float, logging propensity of the logged action at that position
    n_actions: int
    n_positions: int

    def __post_init__(self) -> None:
        n = len(self.action)
        if not (len(self.position) == len(self.reward) == len(self.pscore) == n):
            raise ValueError("action, position, reward and pscore must have the same length")
        if n and (np.any(self.pscore <= 0) or np.any(self.pscore > 1)):
            raise ValueError("logging propensities must lie in (0, 1]")

    def __len__(self) -> int:
        return len(self.action)


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float


def reward_model(
    rounds: LoggedRounds, rows: np.ndarray, prior_strength: float = 10.0
) -> np.ndarray:
    """``q[k, a]``: shrunk per item × position mean reward fitted on ``rows``."""
    pos, act, rew = rounds.position[rows], rounds.action[rows], rounds.reward[rows]
    shape = (rounds.n_positions, rounds.n_actions)
    clicks = np.zeros(shape)
    shown = np.zeros(shape)
    np.add.at(clicks, (pos, act), rew)
    np.add.at(shown, (pos, act), 1.0)
    overall = rew.mean() if len(rew) else 0.0
    pos_clicks, pos_shown = clicks.sum(axis=1), shown.sum(axis=1)
    # position mean, itself shrunk to the overall mean so an empty position is still defined
    pos_mean = (pos_clicks + prior_strength * overall) / (pos_shown + prior_strength)
    return (clicks + prior_strength * pos_mean[:, None]) / (shown + prior_strength)


def cross_fitted_predictions(
    rounds: LoggedRounds, folds: int = 2, seed: int = 0, prior_strength: float = 10.0
) -> np.ndarray:
    """``q_rows[i, a]`` from the model that did not see round ``i``."""
    n = len(rounds)
    fold_of = np.random.default_rng(seed).permutation(n) % folds
    models = np.stack(
        [reward_model(rounds, np.flatnonzero(fold_of != f), prior_strength) for f in range(folds)]
    )  # (folds, positions, actions)
    return models[fold_of, rounds.position]


def _terms(
    rounds: LoggedRounds, action_dist: np.ndarray, q_rows: np.ndarray
) -> dict[str, np.ndarray]:
    n = len(rounds)
    if action_dist.shape != (n, rounds.n_actions):
        raise ValueError(
            f"action_dist must have shape {(n, rounds.n_actions)}, got {action_dist.shape}"
        )
    idx = np.arange(n)
    weight = action_dist[idx, rounds.action] / rounds.pscore
    direct = (action_dist * q_rows).sum(axis=1)
    return {
        "weight": weight,
        "weighted_reward": weight * rounds.reward,
        "direct": direct,
        "dr": direct + weight * (rounds.reward - q_rows[idx, rounds.action]),
    }


def _point(terms: Mapping[str, np.ndarray], counts: np.ndarray) -> dict[str, np.ndarray]:
    """Estimators for each row of resample ``counts`` (shape ``(b, n)``)."""
    n = counts.sum(axis=1)
    wr = counts @ terms["weighted_reward"]
    w = counts @ terms["weight"]
    with np.errstate(invalid="ignore", divide="ignore"):
        snipw = np.where(w > 0, wr / w, 0.0)
    return {
        "ipw": wr / n,
        "snipw": snipw,
        "dr": (counts @ terms["dr"]) / n,
        "dm": (counts @ terms["direct"]) / n,
    }


def evaluate(
    rounds: LoggedRounds,
    action_dist: np.ndarray,
    *,
    n_bootstrap: int = 1_000,
    level: float = 0.95,
    folds: int = 2,
    prior_strength: float = 10.0,
    seed: int = 0,
) -> dict[str, Estimate]:
    """IPS, SNIPS, DR and DM estimates of the target policy's value, with bootstrap CIs."""
    n = len(rounds)
    if n == 0:
        raise ValueError("no logged rounds to evaluate")
    q_rows = cross_fitted_predictions(rounds, folds, seed, prior_strength)
    terms = _terms(rounds, action_dist, q_rows)
    point = _point(terms, np.ones((1, n)))
    rng = np.random.default_rng(seed + 1)
    draws: dict[str, list[np.ndarray]] = {name: [] for name in ESTIMATORS}
    chunk = max(1, min(n_bootstrap, 2_000_000 // n))
    done = 0
    while done < n_bootstrap:
        size = min(chunk, n_bootstrap - done)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(float)
        for name, values in _point(terms, counts).items():
            draws[name].append(values)
        done += size
    tail = (1.0 - level) / 2.0 * 100.0
    out = {}
    for name in ESTIMATORS:
        sample = np.concatenate(draws[name])
        low, high = np.percentile(sample, [tail, 100.0 - tail])
        out[name] = Estimate(float(point[name][0]), float(low), float(high))
    return out


def context_free_dist(per_position: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Expand ``pi_e[k, a]`` (a context-free policy) to one row per logged round."""
    return per_position[position]
