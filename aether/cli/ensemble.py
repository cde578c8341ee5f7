"""``aether ensemble``: combine rankers fitted on the same split into one checkpoint.

    aether ensemble artifacts/ranker-loo-s0.pt artifacts/ranker-loo-s1.pt \\
        --out artifacts/ranker-loo.pt

The members are ``aether train`` runs on the same dataset and split that differ only in their
``--seed`` (train them side by side, one per core). The ensemble scores with the mean of the
members' logits (``ranker.ensemble``); serving, ``aether eval`` and ``aether bench ranker`` load
it like any checkpoint.

With ``--data`` (the dataset folder the members were trained from) it also measures the ensemble
on the members' validation requests and records ``best_validation_ndcg10`` / ``_hr10`` in the
checkpoint, as ``aether train`` does for one model: choose between ensembles (say two members or
four) on that figure, never on the test.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ranker.checkpoint import load_checkpoint, save_ensemble_checkpoint
from ranker.fit import ensemble_validation_figures

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ensemble", help="combine rankers trained on the same split (mean logit)"
    )
    parser.add_argument("members", nargs="+", type=Path, help="checkpoints from `aether train`")
    parser.add_argument("--out", type=Path, required=True, help="ensemble checkpoint to write")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="the members' dataset folder: also record the ensemble's validation NDCG@10/HR@10",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    members = [load_checkpoint(path) for path in args.members]
    figures = ensemble_validation_figures(members, args.data) if args.data is not None else {}
    version = save_ensemble_checkpoint(args.out, members, figures)
    log.info("wrote %s (%s)", args.out, version)
    print(
        json.dumps(
            {
                "out": str(args.out),
                "model_version": version,
                "val_ndcg10": figures.get("best_validation_ndcg10"),
                "val_hr10": figures.get("best_validation_hr10"),
                "members": [
                    {
                        "path": str(path),
                        "model_version": m.model_version,
                        "val_ndcg10": m.metadata.get("best_validation_ndcg10"),
                        "val_hr10": m.metadata.get("best_validation_hr10"),
                    }
                    for path, m in zip(args.members, members, strict=True)
                ],
            }
        )
    )
    return 0
