"""``aether train``: fit the SASRec ranker on a MovieLens split and write a checkpoint.

    aether train --dataset ml-1m --data ../shared/datasets/ml-1m --out artifacts/ranker.pt
    aether train --from-log --epochs 20 --promote     # the worker's own log; swap it in

The checkpoint is registered in the model registry (``--no-register``: not), and with
``--promote`` promoted with the index serving now (docs/lifecycle.md).

``--split loo`` (default) trains on each user's sequence minus the last two items and selects on
the second-to-last (the literature protocol); ``--split temporal`` trains on events before the
validation cut-off of the global temporal split and selects on the first item after it;
``--split temporal-refit --epochs N`` re-fits on every event before the test cut-off for the N
epochs a ``temporal`` run chose (its ``best_epoch``), with no validation.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from aether.cli.common import add_dataset_args
from aether.cli.training_args import (
    add_temporal_arguments,
    add_training_arguments,
    model_config_from,
    train_config_from,
)
from core.errors import ConfigError
from core.settings import load_settings
from interactions.movielens import load_split
from interactions.sequences import SPLIT_KINDS
from ranker.fit import fit_and_save


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train the SASRec ranker and write a checkpoint")
    add_dataset_args(parser)
    parser.add_argument("--out", type=Path, default=Path("artifacts/ranker.pt"))
    parser.add_argument("--split", choices=tuple(SPLIT_KINDS), default="loo")
    add_temporal_arguments(parser)
    add_training_arguments(parser)
    lifecycle = parser.add_argument_group("lifecycle (docs/lifecycle.md)")
    lifecycle.add_argument(
        "--from-log",
        action="store_true",
        help="train on the worker's offline event log of this namespace instead of --dataset "
        "(exactly the events it accepted; lifecycle.from_log)",
    )
    lifecycle.add_argument(
        "--before-ms", type=int, default=None, help="--from-log: only events before this time"
    )
    lifecycle.add_argument(
        "--no-register", action="store_true", help="do not register the checkpoint"
    )
    lifecycle.add_argument(
        "--promote", action="store_true", help="promote it with the index serving now"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.split == "temporal-refit" and args.epochs is None:
        raise ConfigError(
            "--split temporal-refit trains a fixed number of epochs with no validation: pass "
            "--epochs N, the best_epoch of an `aether train --split temporal` run"
        )
    settings = load_settings()
    dataset = args.dataset
    if args.from_log:
        from lifecycle.from_log import log_dataset_name, log_split

        dataset = log_dataset_name(settings.deployment)
        split = log_split(
            settings.deployment,
            args.split,
            args.temporal_requests,
            before_ms=args.before_ms,
            dismissals=args.dismissals,
        )
    else:
        split = load_split(
            args.dataset, args.data, args.split, args.temporal_requests, dismissals=args.dismissals
        )
    result = fit_and_save(
        split,
        dataset,
        args.out,
        model_config_from(args),
        train_config_from(args),
        threads=args.threads,
    )
    registered: dict[str, object] = {}
    if not args.no_register:
        from lifecycle.publish import register_checkpoint

        model, release = register_checkpoint(
            settings.milvus, settings.deployment, args.out, promote_it=args.promote
        )
        registered = {"model_version": model.version, "release": release and release.label}
    print(
        json.dumps(
            {
                **registered,
                "out": str(args.out),
                "dataset": dataset,
                "split": split.name,
                "best_epoch": result.best_epoch,
                "val_ndcg10": _rounded(result.best_validation_ndcg10),
                "val_hr10": _rounded(result.best_validation_hr10),
                "epochs_run": result.epochs_run,
                "train_seconds": round(result.train_seconds, 1),
                "stopped_because": result.stopped_because,
            }
        )
    )
    return 0


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)
