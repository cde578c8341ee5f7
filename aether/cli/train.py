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
import logging
import math
from pathlib import Path

import torch

from aether.cli.common import add_dataset_args
from core.errors import ConfigError
from interactions.movielens import load_movielens
from interactions.sequences import (
    TEMPORAL_REQUESTS,
    Split,
    filter_rare_items,
    leave_one_out,
    temporal_refit_split,
    temporal_split,
)
from ranker.checkpoint import save_checkpoint
from ranker.train import LR_SCHEDULES, TrainConfig, TrainResult, train_sasrec

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 200


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train the SASRec ranker and write a checkpoint")
    add_dataset_args(parser)
    parser.add_argument("--out", type=Path, default=Path("artifacts/ranker.pt"))
    parser.add_argument("--split", choices=("loo", "temporal", "temporal-refit"), default="loo")
    add_temporal_arguments(parser)
    add_training_arguments(parser)
    parser.set_defaults(func=run)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Model and optimiser flags shared by ``aether train`` and ``aether eval``."""
    group = parser.add_argument_group("model and training")
    group.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"at most (default {DEFAULT_EPOCHS}; exactly, "
        "and required, for --split temporal-refit)",
    )
    group.add_argument("--max-minutes", type=float, default=None, help="training time budget")
    group.add_argument("--batch-size", type=int, default=128)
    group.add_argument("--lr", type=float, default=1e-3)
    group.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default="constant",
        help="cosine: decay the learning rate to 0 over --epochs (use with a fixed epoch count)",
    )
    group.add_argument("--patience", type=int, default=5, help="validations without gain")
    group.add_argument("--validate-every", type=int, default=1, help="epochs between validations")
    group.add_argument("--hidden", type=int, default=64)
    group.add_argument("--blocks", type=int, default=2)
    group.add_argument("--heads", type=int, default=1)
    group.add_argument("--dropout", type=float, default=0.2)
    group.add_argument("--max-length", type=int, default=200)
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")


def model_config_from(args: argparse.Namespace) -> dict[str, int | float]:
    return {
        "hidden": args.hidden,
        "n_blocks": args.blocks,
        "n_heads": args.heads,
        "dropout": args.dropout,
        "max_length": args.max_length,
    }


def train_config_from(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        epochs=args.epochs or DEFAULT_EPOCHS,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_schedule=args.lr_schedule,
        patience=args.patience,
        validate_every=args.validate_every,
        max_minutes=args.max_minutes,
        seed=args.seed,
        progress=not args.no_progress,
    )


def add_temporal_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--temporal-requests",
        choices=TEMPORAL_REQUESTS,
        default="every",
        help="temporal split: every event after the cut-off is a request (history up to it), "
        "or only each user's first item after it",
    )


def build_split(dataset: str, data: Path | None, split: str, temporal_requests: str) -> Split:
    ratings = filter_rare_items(load_movielens(dataset, data).ratings)
    if split == "loo":
        return leave_one_out(ratings)
    temporal = temporal_split(ratings, requests=temporal_requests)
    return temporal_refit_split(ratings, temporal) if split == "temporal-refit" else temporal


def train_and_save(split: Split, dataset: str, args: argparse.Namespace, out: Path) -> TrainResult:
    if args.threads:
        torch.set_num_threads(args.threads)
    train_config = train_config_from(args)
    result = train_sasrec(split.train, split.validation, model_config_from(args), train_config)
    metadata = result.metadata(train_config) | {
        "dataset": dataset,
        "split": split.name,
        "cutoff_ms": split.cutoff_ms,
        "validation_cutoff_ms": split.validation_cutoff_ms,
        "temporal_requests": split.temporal_requests,
    }
    version = save_checkpoint(out, result.model, result.vocab, metadata)
    log.info("wrote %s (%s)", out, version)
    return result


def run(args: argparse.Namespace) -> int:
    if args.split == "temporal-refit" and args.epochs is None:
        raise ConfigError(
            "--split temporal-refit trains a fixed number of epochs with no validation: pass "
            "--epochs N, the best_epoch of an `aether train --split temporal` run"
        )
    split = build_split(args.dataset, args.data, args.split, args.temporal_requests)
    result = train_and_save(split, args.dataset, args, args.out)
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
