"""Cross-policy OPE on the Open Bandit Dataset: evaluate BTS on the random log and vice versa.

The on-policy CTR of each log is the ground truth the other log's estimate is compared with.

* **random from bts log**: the target (uniform random) puts each of ``n_items`` items at each
  position with probability ``1 / n_items``; the logging propensities are the bts log's own
  ``propensity_score`` (exact, per row).
* **bts from random log**: the bts policy's posterior changed during the week (its logged
  propensities for one (item, position) vary by orders of magnitude), so "the bts policy" is
  its time-average ``pi_bts(a | k)``. Two estimates of it are offered:

  - ``empirical`` (default, used for the headline keys): the bts log's item-at-position
    frequencies, ``(count(a, k) + 0.5) / (n_k + 0.5 * n_items)`` (add-half smoothing so an item
    never shown by bts in the sample keeps a tiny probability). Unbiased for the time-average.
  - ``thompson`` (the OBP paper's mechanics): Bernoulli Thompson sampling with the posterior
    ``Beta(1 + clicks_a, 1 + non-clicks_a)`` fitted on the bts log, ranked into the 3 slots;
    ``pi(a | k)`` by Monte Carlo over ``n_draws`` rankings. The paper used the production
    posterior (trained on far more data); a 10k-row posterior is nearly flat, so this variant
    is closer to uniform than the real bts policy was.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bandits.exploration import slot_propensities
from bandits.ope import Estimate, LoggedRounds, context_free_dist, evaluate
from bandits.posterior import BetaPosterior

SMOOTHING = 0.5


def rounds_from_frame(frame: pd.DataFrame, n_items: int, n_positions: int) -> LoggedRounds:
    return LoggedRounds(
        action=frame["item_id"].to_numpy(dtype=int),
        position=frame["position"].to_numpy(dtype=int),
        reward=frame["click"].to_numpy(dtype=float),
        pscore=frame["propensity_score"].to_numpy(dtype=float),
        n_actions=n_items,
        n_positions=n_positions,
    )


def uniform_policy(n_items: int, n_positions: int) -> np.ndarray:
    return np.full((n_positions, n_items), 1.0 / n_items)


def empirical_policy(frame: pd.DataFrame, n_items: int, n_positions: int) -> np.ndarray:
    """``pi[k, a]`` from a log's item-at-position frequencies, add-half smoothed."""
    counts = np.zeros((n_positions, n_items))
    np.add.at(counts, (frame["position"].to_numpy(int), frame["item_id"].to_numpy(int)), 1.0)
    return (counts + SMOOTHING) / (counts.sum(axis=1, keepdims=True) + SMOOTHING * n_items)


def thompson_policy(
    frame: pd.DataFrame, n_items: int, n_positions: int, n_draws: int = 20_000, seed: int = 0
) -> np.ndarray:
    """``pi[k, a]`` of Bernoulli TS with a posterior fitted on ``frame``, by Monte Carlo."""
    clicks = np.bincount(frame["item_id"].to_numpy(int), weights=frame["click"], minlength=n_items)
    shown = np.bincount(frame["item_id"].to_numpy(int), minlength=n_items)
    ids = [str(a) for a in range(n_items)]
    posteriors = {
        ids[a]: BetaPosterior(1.0 + clicks[a], 1.0 + shown[a] - clicks[a]) for a in range(n_items)
    }
    per_slot = slot_propensities(
        ids, posteriors, n_positions, n_draws=n_draws, seed=seed, method="monte_carlo"
    )
    return per_slot.T  # (positions, items)


def cross_policy_estimates(
    random_frame: pd.DataFrame,
    bts_frame: pd.DataFrame,
    n_items: int,
    n_positions: int,
    *,
    bts_method: str = "empirical",
    n_bootstrap: int = 1_000,
    seed: int = 0,
) -> dict[str, dict[str, Estimate]]:
    """``{"bts_from_random": {...}, "random_from_bts": {...}}`` estimator → estimate."""
    if bts_method == "empirical":
        bts = empirical_policy(bts_frame, n_items, n_positions)
    elif bts_method == "thompson":
        bts = thompson_policy(bts_frame, n_items, n_positions, seed=seed)
    else:
        raise ValueError(f"bts_method must be 'empirical' or 'thompson', got {bts_method!r}")
    random_rounds = rounds_from_frame(random_frame, n_items, n_positions)
    bts_rounds = rounds_from_frame(bts_frame, n_items, n_positions)
    return {
        "bts_from_random": evaluate(
            random_rounds,
            context_free_dist(bts, random_rounds.position),
            n_bootstrap=n_bootstrap,
            seed=seed,
        ),
        "random_from_bts": evaluate(
            bts_rounds,
            context_free_dist(uniform_policy(n_items, n_positions), bts_rounds.position),
            n_bootstrap=n_bootstrap,
            seed=seed,
        ),
    }


def flat_report(
    estimates: dict[str, dict[str, Estimate]],
    truth: dict[str, float],
    prefix: str,
    suffix: str = "",
) -> dict[str, float]:
    """Flatten to ``{prefix}_{direction}_{estimator}{suffix}`` keys with CIs and relative errors."""
    out: dict[str, float] = {}
    for direction, by_name in estimates.items():
        target_truth = truth[direction]
        for name, est in by_name.items():
            key = f"{prefix}_{direction}_{name}{suffix}"
            out[key] = est.value
            if name != "dm":  # DM's bootstrap holds the fitted model fixed: its CI is too narrow
                out[f"{key}_ci_low"] = est.ci_low
                out[f"{key}_ci_high"] = est.ci_high
            out[f"{key}_relative_error"] = abs(est.value - target_truth) / target_truth
    return out
