"""``aether ope``: off-policy evaluation on the Open Bandit Dataset, or the exploration simulation.

    aether ope --dataset open-bandit --data ../shared/datasets/open-bandit --json ope.json
    aether ope --dataset ml-latest-small --simulate --json sim.json --plot sim.png

With ``open-bandit`` it estimates, per campaign, BTS's CTR from the random log and the random
policy's CTR from the BTS log (IPS, SNIPS, DR, DM with bootstrap CIs) next to both logs' on-policy
CTRs. With a MovieLens dataset and ``--simulate`` it replays the ratings in event time and
compares Thompson exploration with greedy (see ``bandits.simulation``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from aether.cli.common import add_dataset_args, add_json_arg, machine_description, write_json
from core.errors import ConfigError

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ope", help="off-policy evaluation (Open Bandit) or exploration simulation (MovieLens)"
    )
    add_dataset_args(parser, default="open-bandit")
    add_json_arg(parser)
    parser.add_argument(
        "--campaign",
        action="append",
        choices=("all", "men", "women"),
        help="Open Bandit campaign(s) to evaluate (repeatable; default: all three)",
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--simulate", action="store_true", help="run the MovieLens exploration simulation"
    )
    parser.add_argument(
        "--plot", type=Path, default=None, help="simulation: write the PNG plot here"
    )
    parser.add_argument(
        "--requests", type=int, default=60_000, help="simulation: number of requests"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.dataset == "open-bandit":
        if args.simulate:
            raise ConfigError("--simulate needs a MovieLens dataset (ml-latest-small or ml-1m)")
        figures = open_bandit_figures(
            args.data, args.campaign or ["all", "men", "women"], args.bootstrap, args.seed
        )
    else:
        if not args.simulate:
            raise ConfigError(f"--dataset {args.dataset} is only used with --simulate")
        figures = simulation_figures(args.dataset, args.data, args.requests, args.seed, args.plot)
    figures["machine"] = machine_description()
    for key in sorted(figures):
        value = figures[key]
        print(f"{key:55s} {value:.6f}" if isinstance(value, float) else f"{key:55s} {value}")
    write_json(args.json, figures)
    return 0


def open_bandit_figures(
    data: Path | None, campaigns: list[str], n_bootstrap: int, seed: int
) -> dict[str, Any]:
    from bandits.obd import cross_policy_estimates, flat_report
    from interactions.open_bandit import load_open_bandit

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
    dataset: str, data: Path | None, requests: int, seed: int, plot: Path | None
) -> dict[str, Any]:
    from bandits.simulation import SimulationConfig, plot_simulation, simulate
    from interactions.movielens import load_movielens

    movielens = load_movielens(dataset, data)
    result = simulate(movielens.ratings, SimulationConfig(n_requests=requests, seed=seed))
    if plot is not None:
        plot_simulation(result, plot)
    return dict(result.figures)
