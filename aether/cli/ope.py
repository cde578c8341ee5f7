"""``aether ope``: off-policy evaluation on the Open Bandit Dataset, or the exploration simulation.

    aether ope --dataset open-bandit --data ../shared/datasets/open-bandit --json ope.json
    aether ope --dataset ml-latest-small --simulate --json sim.json --plot sim.png

With ``open-bandit`` it estimates, per campaign, BTS's CTR from the random log and the random
policy's CTR from the BTS log (IPS, SNIPS, DR, DM with bootstrap CIs) next to both logs' on-policy
CTRs. With a MovieLens dataset and ``--simulate`` it replays the ratings in event time and
compares Thompson exploration with greedy (``evaluation.off_policy``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aether.cli.common import add_dataset_args, add_json_arg, machine_description, write_json
from core.errors import ConfigError
from evaluation.off_policy import OPEN_BANDIT_CAMPAIGNS, open_bandit_figures, simulation_figures


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ope", help="off-policy evaluation (Open Bandit) or exploration simulation (MovieLens)"
    )
    add_dataset_args(parser, default="open-bandit")
    add_json_arg(parser)
    parser.add_argument(
        "--campaign",
        action="append",
        choices=OPEN_BANDIT_CAMPAIGNS,
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
            args.data, args.campaign or OPEN_BANDIT_CAMPAIGNS, args.bootstrap, args.seed
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
