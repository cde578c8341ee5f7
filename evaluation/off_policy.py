"""Exploration, evaluated offline: off-policy estimates on the Open Bandit Dataset, and the
MovieLens exploration simulation (what ``aether ope`` reports, as flat figures).

Open Bandit: per campaign, BTS's CTR estimated from the uniformly random log and the random
policy's CTR from the BTS log (IPS, SNIPS, DR, DM with bootstrap CIs, ``bandits.obd``), next to
both logs' on-policy CTRs, which are the truth each estimate is checked against. Simulation:
the ratings replayed in event time, Thompson exploration against greedy
(``bandits.simulation``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bandits.obd import cross_policy_estimates, flat_report
from bandits.simulation import SimulationConfig, plot_simulation, simulate
from interactions.movielens import load_movielens
from interactions.open_bandit import load_open_bandit

log = logging.getLogger(__name__)

OPEN_BANDIT_CAMPAIGNS = ("all", "men", "women")


def open_bandit_figures(
    data: Path | None, campaigns: Sequence[str], n_bootstrap: int, seed: int
) -> dict[str, Any]:
    """Both logs' CTRs and each cross-policy estimate against them, per campaign (``obd_`` for
    all, ``obd_men_``/``obd_women_``). ``_tsmc`` keys: BTS's policy as Thompson sampling over a
    posterior fitted on its log (Monte Carlo), not its log's item-at-position frequencies."""
    figures: dict[str, Any] = {"bootstrap_resamples": n_bootstrap, "seed": seed}
    for campaign in campaigns:
        random_log = load_open_bandit("random", campaign, data)
        bts_log = load_open_bandit("bts", campaign, data)
        prefix = "obd" if campaign == "all" else f"obd_{campaign}"
        figures[f"{prefix}_random_logged_ctr"] = random_log.ctr
        figures[f"{prefix}_bts_logged_ctr"] = bts_log.ctr
        figures[f"{prefix}_rounds_per_log"] = len(random_log.rounds)
        truth = {"bts_from_random": bts_log.ctr, "random_from_bts": random_log.ctr}
        for method, suffix in (("empirical", ""), ("thompson", "_tsmc")):
            log.info("campaign %s: estimating with bts policy method %s", campaign, method)
            estimates = cross_policy_estimates(
                random_log.rounds,
                bts_log.rounds,
                random_log.n_items,
                random_log.n_positions,
                bts_method=method,
                n_bootstrap=n_bootstrap,
                seed=seed,
            )
            if method == "thompson":  # its random_from_bts is identical to the headline one
                estimates = {"bts_from_random": estimates["bts_from_random"]}
            figures.update(flat_report(estimates, truth, prefix, suffix))
    return figures


def simulation_figures(
    dataset: str, data: Path | None, requests: int, seed: int, plot: Path | None = None
) -> dict[str, Any]:
    """The exploration simulation's figures on a MovieLens dataset; ``plot``: also a PNG."""
    movielens = load_movielens(dataset, data)
    result = simulate(movielens.ratings, SimulationConfig(n_requests=requests, seed=seed))
    if plot is not None:
        plot_simulation(result, plot)
    return dict(result.figures)
