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
from aether.cli.train import add_temporal_arguments, add_training_arguments, train_and_save
from benchmarks import ranker_latency
from benchmarks.machine import machine_description
from core.errors import ConfigError, ModelError
from evaluation.report import write_report
from evaluation.runner import ProtocolResult, evaluate_leave_one_out, evaluate_temporal
from interactions.movielens import load_movielens
from interactions.sequences import (
    Split,
    filter_rare_items,
    leave_one_out,
    temporal_refit_split,
    temporal_split,
)
from ranker.checkpoint import Checkpoint, load_checkpoint

log = logging.getLogger(__name__)


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


def _ranker_for(
    split: Split, checkpoint: Path | None, name: str, args: argparse.Namespace
) -> tuple[Checkpoint, Path]:
    """Load ``checkpoint`` (checked against the split), or train one into ``--save-dir``."""
    if checkpoint is None:
        checkpoint = args.save_dir / f"ranker-{name}-{args.dataset}.pt"
        log.info("no %s checkpoint given: training one into %s", name, checkpoint)
        train_and_save(split, args.dataset, args, checkpoint)
    loaded = load_checkpoint(checkpoint)
    meta = loaded.metadata
    if meta.get("dataset") != args.dataset or meta.get("split") != split.name:
        raise ModelError(
            f"{checkpoint} was trained on {meta.get('dataset')}/{meta.get('split')}, "
            f"not {args.dataset}/{split.name}"
        )
    if (
        split.cutoff_ms is not None
        and meta.get("validation_cutoff_ms") != split.validation_cutoff_ms
    ):
        raise ModelError(f"{checkpoint} was trained with another temporal cut-off")
    if split.temporal_requests is not None and (
        meta.get("temporal_requests", "first") != split.temporal_requests
    ):
        raise ModelError(
            f"{checkpoint} was selected on {meta.get('temporal_requests', 'first')!r} temporal "
            f"requests, not {split.temporal_requests!r} (see --temporal-requests)"
        )
    return loaded, checkpoint


def _member_figures(prefix: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """Each ensemble member's own training figures, as flat keys (none for a single model)."""
    members = metadata.get("members") or []
    flat: dict[str, Any] = {f"{prefix}_ensemble_members": len(members) or None}
    for i, member in enumerate(members):
        for key in (
            "best_epoch",
            "best_validation_ndcg10",
            "best_validation_hr10",
            "train_seconds",
        ):
            flat[f"{prefix}_member{i}_{key}"] = member.get(key)
        flat[f"{prefix}_member{i}_seed"] = member.get("train_config", {}).get("seed")
    return flat


def _training_curves(name: str, metadata: dict[str, Any]) -> dict[str, list[Any]]:
    """The validation curve of a checkpoint, or one per member of an ensemble."""
    members = metadata.get("members") or []
    if not members:
        return {name: metadata.get("curve", [])}
    return {
        f"{name}, seed {m.get('train_config', {}).get('seed', i)}": m.get("curve", [])
        for i, m in enumerate(members)
    }


def _flatten(result: ProtocolResult, prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for method, figures in result.figures.items():
        flat.update({f"{prefix}_{method}_{k}": v for k, v in figures.items()})
    for method, figures in result.cold.items():
        flat.update({f"{prefix}_cold_{method}_{k}": v for k, v in figures.items()})
    for method, value in result.validation_ndcg10.items():
        flat[f"{prefix}_val_{method}_ndcg10"] = value
    flat.update({f"{prefix}_chosen_{k}": v for k, v in result.chosen.items()})
    ours = result.figures["sasrec"]
    flat.update({f"{prefix}_{k}": ours[k] for k in ("ndcg10", "hr10", "mrr", "coverage")})
    best = result.against_best_baseline["sasrec"]["baseline"]
    flat[f"{prefix}_best_baseline"] = best
    flat[f"{prefix}_best_baseline_ndcg10"] = result.figures[best]["ndcg10"]
    for model, versus in result.against_best_baseline.items():
        name = prefix if model == "sasrec" else f"{prefix}_{model}"
        flat[f"{name}_gain_over_best_baseline"] = versus["gain"]
        flat[f"{name}_gain_ci95_low"] = versus["ci95_low"]
        flat[f"{name}_gain_ci95_high"] = versus["ci95_high"]
    return flat


def run(args: argparse.Namespace) -> int:
    flat: dict[str, Any] = {"machine": machine_description(), "dataset": args.dataset}
    data = load_movielens(args.dataset, args.data)
    ratings = filter_rare_items(data.ratings)
    flat["users"], flat["items"] = ratings["user_id"].nunique(), ratings["item_id"].nunique()
    flat["interactions"] = len(ratings)
    results, curves = [], {}

    loo = leave_one_out(ratings)
    model, loo_path = _ranker_for(loo, args.loo_checkpoint, "loo", args)
    result = evaluate_leave_one_out(
        loo, data.items, model.model, model.vocab, progress=not args.no_progress
    )
    results.append(result)
    flat.update(_flatten(result, "loo"))
    flat["train_seconds"] = model.metadata.get("train_seconds")
    flat["loo_best_epoch"] = model.metadata.get("best_epoch")
    flat["loo_model_version"] = model.model_version
    flat.update(_member_figures("loo", model.metadata))
    curves.update(_training_curves("leave-one-out", model.metadata))

    if not args.skip_temporal:
        temporal = temporal_split(ratings, requests=args.temporal_requests)
        flat["temporal_requests"] = args.temporal_requests
        tmodel, _ = _ranker_for(temporal, args.temporal_checkpoint, "temporal", args)
        test_model = None
        if args.temporal_refit or args.temporal_refit_checkpoint is not None:
            # Choices were made before T_val; re-fit on everything before T as the baselines
            # are, for exactly the number of epochs validation chose.
            if "members" in tmodel.metadata:
                raise ConfigError(
                    "--temporal-refit re-fits one model for the epochs it chose; give a single "
                    "`aether train --split temporal` checkpoint, not an ensemble"
                )
            refit_args = argparse.Namespace(
                **{**vars(args), "epochs": tmodel.metadata["best_epoch"]}
            )
            refit_split = temporal_refit_split(ratings, temporal)
            refit, _ = _ranker_for(
                refit_split, args.temporal_refit_checkpoint, "temporal-refit", refit_args
            )
            test_model = (refit.model, refit.vocab)
            flat["temporal_refit_epochs"] = refit.metadata.get("epochs_run")
            flat["temporal_refit_train_seconds"] = refit.metadata.get("train_seconds")
            flat["temporal_refit_model_version"] = refit.model_version
        flat["temporal_refit"] = test_model is not None
        result = evaluate_temporal(
            temporal,
            ratings,
            data.items,
            tmodel.model,
            tmodel.vocab,
            test_model=test_model,
            progress=not args.no_progress,
        )
        results.append(result)
        flat.update(_flatten(result, "temporal"))
        flat["temporal_train_seconds"] = tmodel.metadata.get("train_seconds")
        flat["temporal_best_epoch"] = tmodel.metadata.get("best_epoch")
        flat.update(_member_figures("temporal", tmodel.metadata))
        flat["temporal_cutoff_ms"] = temporal.cutoff_ms
        flat["temporal_validation_cutoff_ms"] = temporal.validation_cutoff_ms
        curves.update(_training_curves("temporal", tmodel.metadata))

    if not args.no_bench:
        flat.update(
            ranker_latency.measure(
                args.bench_checkpoint or loo_path,
                calls=args.bench_calls,
                progress=not args.no_progress,
            )
        )
    flat = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in flat.items()}
    write_json(args.json, flat)
    if args.report is not None:
        notes = [
            "Every method ranks ALL catalogue items (no sampled negatives); the user's seen items are filtered.",
            "Ranks are pessimistic about ties. Model selection and λ/window choices use validation only.",
            f"Temporal requests: {args.temporal_requests!r} (every = each event after T with the history up to it; first = each user's first item after T). Figures are for requests whose history has >= 5 events; cold-start requests are in their own table.",
            "Gain intervals: paired bootstrap over users (all of a user's requests resampled together).",
            "Temporal: baselines are re-fitted on all events before T; the ranker is trained on events before T_val only.",
            "sasrec_pop = log-softmax(SASRec) + beta * log(1 + recent count), beta chosen on validation (0 = plain SASRec).",
        ]
        path = write_report(args.report, results, flat, curves, notes)
        log.info("wrote %s", path)
    print(
        {
            k: v
            for k, v in flat.items()
            if k
            in (
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
        }
    )
    return 0
