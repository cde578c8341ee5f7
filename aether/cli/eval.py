"""``aether eval``: both offline protocols, baselines, report, inference benchmark.

    aether eval --dataset ml-1m --data ../shared/datasets/ml-1m \\
        --loo-checkpoint artifacts/ranker.pt --temporal-checkpoint artifacts/ranker-temporal.pt \\
        --json artifacts/eval.json --report docs/benchmarks/ranker-report

The latency benchmark alone is ``aether bench ranker``.

A protocol whose checkpoint is not given is trained here first (same flags as ``aether train``).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

from aether.cli.common import add_dataset_args, add_json_arg, write_json
from aether.cli.training_args import (
    add_temporal_arguments,
    add_training_arguments,
    model_config_from,
    train_config_from,
)
from benchmarks import ranker_latency
from benchmarks.machine import machine_description
from evaluation.report import write_report
from evaluation.suite import SuiteConfig, report_notes, run_suite

log = logging.getLogger(__name__)

# the figures printed at the end (all of them go to --json)
HEADLINE = (
    "loo_ndcg10",
    "loo_hr10",
    "temporal_ndcg10",
    "temporal_best_baseline_ndcg10",
    "temporal_gain_over_best_baseline",
    "temporal_gain_ci95_low",
    "temporal_gain_ci95_high",
    "loo_gain_over_best_baseline",
    "loo_sasrec_pop_ndcg10",
    "temporal_sasrec_pop_ndcg10",
    "temporal_sasrec_pop_gain_over_best_baseline",
    "train_seconds",
    "score200_p50_ms",
    "score200_p99_ms",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="offline evaluation of the ranker and baselines")
    add_dataset_args(parser)
    add_json_arg(parser)
    parser.add_argument("--report", type=Path, default=None, help="folder for report.md + plots")
    parser.add_argument(
        "--loo-checkpoint",
        type=Path,
        default=None,
        help="ranker trained with `aether train --split loo` (else trained here)",
    )
    parser.add_argument(
        "--temporal-checkpoint",
        type=Path,
        default=None,
        help="ranker trained with `aether train --split temporal` (else trained here)",
    )
    parser.add_argument(
        "--temporal-refit",
        action="store_true",
        help="test a temporal ranker re-fitted on every event before T for the epoch count the "
        "temporal checkpoint chose on validation (trained here unless "
        "--temporal-refit-checkpoint is given); validation choices still use the checkpoint",
    )
    parser.add_argument(
        "--temporal-refit-checkpoint",
        type=Path,
        default=None,
        help="ranker from `aether train --split temporal-refit --epochs N` (implies --temporal-refit)",
    )
    parser.add_argument(
        "--save-dir",
        type=Path,
        default=Path("artifacts"),
        help="where rankers trained here are saved",
    )
    parser.add_argument("--skip-temporal", action="store_true", help="leave-one-out only")
    add_temporal_arguments(parser)
    parser.add_argument("--no-bench", action="store_true", help="skip the latency benchmark")
    parser.add_argument(
        "--bench-checkpoint",
        type=Path,
        default=None,
        help="model for the benchmark (default: the leave-one-out one)",
    )
    parser.add_argument("--bench-calls", type=int, default=1000)
    add_training_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    suite = run_suite(
        SuiteConfig(
            dataset=args.dataset,
            data=args.data,
            loo_checkpoint=args.loo_checkpoint,
            temporal_checkpoint=args.temporal_checkpoint,
            temporal_refit=args.temporal_refit,
            temporal_refit_checkpoint=args.temporal_refit_checkpoint,
            save_dir=args.save_dir,
            skip_temporal=args.skip_temporal,
            temporal_requests=args.temporal_requests,
            model_config=model_config_from(args),
            train_config=train_config_from(args),
            dismissals=args.dismissals,
            threads=args.threads,
            progress=not args.no_progress,
        )
    )
    flat: dict[str, Any] = {"machine": machine_description(), **suite.figures}
    if not args.no_bench:
        flat.update(
            ranker_latency.measure(
                args.bench_checkpoint or suite.loo_checkpoint,
                calls=args.bench_calls,
                progress=not args.no_progress,
            )
        )
    flat = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in flat.items()}
    write_json(args.json, flat)
    if args.report is not None:
        notes = report_notes(args.temporal_requests)
        path = write_report(args.report, suite.results, flat, suite.curves, notes)
        log.info("wrote %s", path)
    print({k: v for k, v in flat.items() if k in HEADLINE})
    return 0
