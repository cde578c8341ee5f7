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

from aether.cli.train import build_split
from core.errors import ConfigError
from evaluation.metrics import hit_rate_at_k, ndcg_at_k
from ranker.checkpoint import (
    Checkpoint,
    ensemble_members,
    load_checkpoint,
    save_ensemble_checkpoint,
)
from ranker.data import ItemVocabulary
from ranker.ensemble import SASRecEnsemble
from ranker.train import validation_ranks

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
    figures = validation_figures(members, args.data) if args.data is not None else {}
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


# the split names checkpoints record -> the `aether train --split` that rebuilds them
_SPLIT_FLAGS = {"leave-one-out": "loo", "temporal": "temporal"}


def validation_figures(members: list[Checkpoint], data: Path) -> dict[str, float]:
    """NDCG@10 and HR@10 of the members' mean logit on the validation requests they were
    selected on, rebuilt from ``data`` and the split their metadata records."""
    models = ensemble_members(members)
    meta = members[0].metadata
    flag = _SPLIT_FLAGS.get(meta.get("split", ""))
    if flag is None:
        raise ConfigError(
            f"the members were fitted on split {meta.get('split')!r}, which has no validation "
            f"requests to measure the ensemble on; leave out --data"
        )
    # checkpoints from before the request kinds existed were selected on the first-item ones
    split = build_split(meta["dataset"], data, flag, meta.get("temporal_requests") or "first")
    vocab = members[0].vocab
    rebuilt = ItemVocabulary.from_sequences(split.train.values())
    if rebuilt.item_ids != vocab.item_ids or split.validation_cutoff_ms != meta.get(
        "validation_cutoff_ms"
    ):
        raise ConfigError(
            f"{data} gives another {split.name} split than the members were fitted on "
            f"(its training items or validation cut-off differ): is it the same dataset?"
        )
    ranks = validation_ranks(SASRecEnsemble(models), vocab, split.validation)
    figures = {
        "best_validation_ndcg10": ndcg_at_k(ranks, 10),
        "best_validation_hr10": hit_rate_at_k(ranks, 10),
    }
    log.info("ensemble on %d validation requests: %s", len(ranks), figures)
    return figures
