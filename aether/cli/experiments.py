"""``aether experiments report``: per-arm results of the running experiments, with statistics.

    aether experiments report --experiment ranker --json artifacts/experiments.json
    aether experiments report --source offline --experiments-file infra/experiments.example.yaml

Reads the served slates (``<ns>.impressions``) and the users' events (``<ns>.events``, or the
offline log with ``--source offline``; ``features.traffic_log``), attributes clicks and
dismissals to slates by the system's own rule in event time (``bandits.attribution``), and
prints per experiment and arm: users, impressions, CTR, dismiss rate, coverage and Gini of
exposure with intervals; each arm against the control (delta-method z-test on CTR, guardrails);
the sample-ratio-mismatch check against the configured weights; and the team-draft preference of
interleaving arms (``evaluation.experiment_readout``, whose docstring says which test and why).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from aether.cli.common import add_json_arg, machine_description, write_json
from bandits import configs_from_settings
from core.errors import ConfigError
from core.settings import load_settings
from evaluation.experiment_log import slate_records
from evaluation.experiment_output import flat_figures, format_table
from evaluation.experiment_readout import ReadoutConfig, read_out
from features.traffic_log import SOURCES, read_traffic
from serving.experiments import Experiments

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("experiments", help="read out the online experiments")
    verbs = parser.add_subparsers(dest="experiments_command", required=True, metavar="VERB")
    report = verbs.add_parser(
        "report", help="per-arm metrics, tests, guardrails, SRM and interleaving preference"
    )
    report.add_argument("--experiment", default=None, help="one experiment (default: all)")
    report.add_argument(
        "--experiments-file",
        type=Path,
        default=None,
        help="the experiments YAML serving runs with (default: AETHER_SERVING__EXPERIMENTS_FILE)",
    )
    report.add_argument(
        "--source",
        choices=SOURCES,
        default="kafka",
        help="kafka: both topics; offline: events from the offline log",
    )
    report.add_argument("--control", default=None, help="control arm (default: first arm)")
    report.add_argument("--alpha", type=float, default=0.05, help="two-sided significance level")
    report.add_argument(
        "--bootstrap", type=int, default=500, help="coverage/Gini resamples of users"
    )
    report.add_argument("--seed", type=int, default=0)
    report.add_argument("--namespace", help="override AETHER_NAMESPACE")
    report.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to read each topic to its end"
    )
    add_json_arg(report)
    report.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    settings = load_settings(**({"namespace": args.namespace} if args.namespace else {}))
    path = args.experiments_file or settings.serving.experiments_file
    if not path:
        raise ConfigError(
            "no experiments file: pass --experiments-file (the arm weights are needed for the "
            "sample-ratio check) or set AETHER_SERVING__EXPERIMENTS_FILE"
        )
    spec = Experiments.load(path).spec
    wanted = [e for e in spec.experiments if args.experiment in (None, e.name)]
    if not wanted:
        known = ", ".join(e.name for e in spec.experiments) or "none"
        raise ConfigError(f"{path} has no experiment {args.experiment!r} (experiments: {known})")
    if args.control is not None and len(wanted) > 1:
        raise ConfigError("--control names an arm of one experiment: pass --experiment too")
    if not 0.0 < args.alpha < 1.0:
        raise ConfigError(f"--alpha must be in (0, 1), got {args.alpha}")

    traffic = read_traffic(settings, args.source, timeout_s=args.timeout)
    attribution, _ = configs_from_settings(settings)
    records = slate_records(traffic.impressions, traffic.interactions, attribution)
    config = ReadoutConfig(alpha=args.alpha, n_bootstrap=args.bootstrap, seed=args.seed)
    figures: dict[str, Any] = {
        "source": traffic.source,
        "namespace": settings.namespace,
        "impressions_read": len(traffic.impressions),
        "events_read": len(traffic.interactions),
        "records_skipped": traffic.skipped,
        "slates": len(records),
        "attribution_window_ms": attribution.window_ms,
        "machine": machine_description(),
    }
    print(
        f"{len(records)} slates and {len(traffic.interactions)} events from {traffic.source} "
        f"(namespace {settings.namespace}; attribution window {attribution.window_ms / 60_000:g} "
        "min, event time)"
    )
    for experiment in wanted:
        weights = {arm.name: arm.weight for arm in experiment.arms}
        readout = read_out(records, experiment.name, weights, control=args.control, config=config)
        print()
        print(format_table(readout))
        figures.update(flat_figures(readout))
    write_json(args.json, figures)
    return 0
