"""``aether train``: fit the SASRec ranker on a MovieLens split and write a checkpoint.

    aether train --dataset ml-1m --data ../shared/datasets/ml-1m --out artifacts/ranker.pt

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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.split == "temporal-refit" and args.epochs is None:
        raise ConfigError(
            "--split temporal-refit trains a fixed number of epochs with no validation: pass "
            "--epochs N, the best_epoch of an `aether train --split temporal` run"
        )
    split = load_split(args.dataset, args.data, args.split, args.temporal_requests)
    result = fit_and_save(
        split,
        args.dataset,
        args.out,
        model_config_from(args),
        train_config_from(args),
        threads=args.threads,
    )
    print(
        json.dumps(
            {
                "out": str(args.out),
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
