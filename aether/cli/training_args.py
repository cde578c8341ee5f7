"""Model, optimiser and temporal-request flags shared by ``aether train`` and ``aether eval``,
and the configs built from them."""

from __future__ import annotations

import argparse

from interactions.sequences import TEMPORAL_REQUESTS
from ranker.train import LR_SCHEDULES, TrainConfig

DEFAULT_EPOCHS = 200


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
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
    group.add_argument(
        "--dismissals",
        action="store_true",
        help="train on dismissals too (MovieLens: rating <= 2, as the replay maps them): "
        "left out of the sequences, pushed down by an unlikelihood term (ranker.dismissals)",
    )
    group.add_argument("--dismissal-weight", type=float, default=1.0, help="λ of that term")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_temporal_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--temporal-requests",
        choices=TEMPORAL_REQUESTS,
        default="every",
        help="temporal split: every event after the cut-off is a request (history up to it), "
        "or only each user's first item after it",
    )


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
        dismissal_weight=args.dismissal_weight,
        patience=args.patience,
        validate_every=args.validate_every,
        max_minutes=args.max_minutes,
        seed=args.seed,
        progress=not args.no_progress,
    )
