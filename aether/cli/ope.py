"""``aether ope``: off-policy evaluation on the Open Bandit Dataset, or the exploration simulation.

    aether ope --dataset open-bandit --data ../shared/datasets/open-bandit --json ope.json
    aether ope --dataset ml-latest-small --simulate --json sim.json --plot sim.png
    aether ope --from-log --policy uniform --slots stochastic --json own-log.json

With ``open-bandit`` it estimates, per campaign, BTS's CTR from the random log and the random
policy's CTR from the BTS log (IPS, SNIPS, DR, DM with bootstrap CIs) next to both logs' on-policy
CTRs. With a MovieLens dataset and ``--simulate`` it replays the ratings in event time and
compares Thompson exploration with greedy (``evaluation.off_policy``). With ``--from-log`` it
estimates a candidate policy's CTR per slot from the system's own impressions and events (Kafka,
or the offline log with ``--source offline``) with the same estimators (``evaluation.log_ope``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from aether.cli.common import add_dataset_args, add_json_arg, machine_description, write_json
from bandits import configs_from_settings
from core.errors import ConfigError, SchemaError
from core.settings import load_settings
from evaluation.log_ope import POLICIES, SLOT_KINDS, from_log_estimates
from evaluation.off_policy import OPEN_BANDIT_CAMPAIGNS, open_bandit_figures, simulation_figures
from features.traffic_log import SOURCES, read_traffic


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
    own = parser.add_argument_group("the system's own log (--from-log)")
    own.add_argument(
        "--from-log", action="store_true", help="estimate from the logged impressions and events"
    )
    own.add_argument("--policy", choices=POLICIES, default="uniform", help="candidate policy")
    own.add_argument(
        "--policy-scores", type=Path, default=None, help="--policy scores: JSON {item_id: score}"
    )
    own.add_argument("--temperature", type=float, default=1.0, help="--policy scores: softmax T")
    own.add_argument(
        "--slots",
        choices=SLOT_KINDS,
        default="all",
        help="stochastic: only slots logged with propensity < 1 (exploration)",
    )
    own.add_argument("--source", choices=SOURCES, default="kafka", help="where events are read")
    own.add_argument("--namespace", help="override AETHER_NAMESPACE")
    own.add_argument("--timeout", type=float, default=120.0, help="seconds to read each topic")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.from_log:
        figures = own_log_figures(args)
    elif args.dataset == "open-bandit":
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


def own_log_figures(args: argparse.Namespace) -> dict[str, Any]:
    """``--from-log``: the candidate policy's CTR per slot from the namespace's logged traffic."""
    settings = load_settings(**({"namespace": args.namespace} if args.namespace else {}))
    scores = None
    if args.policy_scores is not None:
        try:
            scores = {
                str(k): float(v) for k, v in json.loads(args.policy_scores.read_text()).items()
            }
        except (OSError, ValueError, AttributeError) as exc:
            raise SchemaError(
                f"{args.policy_scores}: not a JSON object of item scores ({exc})"
            ) from None
    traffic = read_traffic(settings, args.source, timeout_s=args.timeout)
    attribution, _ = configs_from_settings(settings)
    figures = from_log_estimates(
        traffic.impressions,
        traffic.interactions,
        args.policy,
        attribution,
        scores=scores,
        temperature=args.temperature,
        slots=args.slots,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
    )
    return {
        "source": traffic.source,
        "namespace": settings.namespace,
        "records_skipped": traffic.skipped,
        "attribution_window_ms": attribution.window_ms,
        **{f"from_log_{k}": v for k, v in figures.items()},
    }
