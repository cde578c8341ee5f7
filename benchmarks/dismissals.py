"""Does training on dismissals help? Two rankers fitted on the same temporal split — one of them
with dismissals (``aether train --dismissals``: ratings <= 2 left out of the sequences and pushed
down by an unlikelihood term, ``ranker.dismissals``) — answer the same test requests.

    aether train --dataset ml-latest-small --split temporal --out artifacts/plain.pt
    aether train --dataset ml-latest-small --split temporal --dismissals --out artifacts/dism.pt
    aether bench dismissals --dataset ml-latest-small --without artifacts/plain.pt \\
        --with artifacts/dism.pt --json docs/benchmarks/dismissals.json

Requests: the temporal protocol's test requests (every rating after ``T``, the user's history up
to it), warm ones only (the history holds an item the ranker knows), every catalogue item ranked,
items the user already rated filtered out. Two kinds of history:

* ``protocol``: every rated item, as the temporal protocol of ``aether eval`` feeds the model;
* ``serving``: the items rated <= 2 left out, as serving's ``recent_items`` leaves dismissed
  items out (and, as serving does, they are still never recommended again). Serving feeds this
  history to a ranker trained with ``--dismissals``, and ``recent_interactions`` (every rated
  item: ``protocol``) to one trained without (``serving.pipeline.model_history``).

Per ranker and history: NDCG@10 and HR@10 over all targets, HR@10 over the targets the user
liked (rating >= 4, higher is better) and over those the user would dismiss (rating <= 2: how
often the ranker puts in the top 10 an item the user is about to reject; lower is better).
Differences (with − without) come with a 95 % interval from a paired bootstrap over users.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from benchmarks.machine import machine_description
from benchmarks.output import print_figures, write_json
from evaluation.metrics import ndcg_gains, target_ranks
from interactions.movielens import load_movielens, load_split
from interactions.replay import CLICK_MIN_RATING, DISMISS_MAX_RATING
from interactions.sequences import filter_rare_items
from ranker.checkpoint import Checkpoint, load_checkpoint
from ranker.fit import check_fitted_on
from ranker.train import score_all_items

K = 10


def _ranks(
    checkpoint: Checkpoint, histories: list[list[str]], seen: list[list[str]], targets: list[str]
) -> np.ndarray:
    vocab = checkpoint.vocab
    scores = score_all_items(checkpoint.model, vocab, histories)
    for row, items in enumerate(seen):
        scores[row, [vocab.index(i) - 1 for i in items if i in vocab]] = -np.inf
    return target_ranks(scores, np.array([vocab.index(t) - 1 for t in targets], dtype=np.int64))


def _paired_interval(
    with_values: np.ndarray, without_values: np.ndarray, users: np.ndarray, seed: int
) -> tuple[float, float, float]:
    """Mean difference (with − without) and its 95 % interval, users resampled."""
    _, members = np.unique(users, return_inverse=True)
    diff = np.bincount(members, weights=with_values - without_values)
    count = np.bincount(members)
    picks = np.random.default_rng(seed).integers(0, diff.size, size=(2000, diff.size))
    draws = diff[picks].sum(axis=1) / count[picks].sum(axis=1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(diff.sum() / count.sum()), float(low), float(high)


def measure(
    dataset: str, data: Path | None, without: Path, with_: Path, seed: int = 0
) -> dict[str, Any]:
    split = load_split(dataset, data, "temporal")
    models = {"without": load_checkpoint(without), "with": load_checkpoint(with_)}
    for path, checkpoint in zip((without, with_), models.values(), strict=True):
        check_fitted_on(checkpoint, path, dataset, split)
    ratings = filter_rare_items(load_movielens(dataset, data).ratings)
    rating = {
        (u, i): r
        for u, i, r in zip(ratings["user_id"], ratings["item_id"], ratings["rating"], strict=True)
    }
    vocab = models["without"].vocab
    cases = [c for c in split.test if any(i in vocab for i in c.history)]
    users = np.array([c.user_id for c in cases])
    target_rating = np.array([rating[(c.user_id, c.target)] for c in cases])
    liked, disliked = target_rating >= CLICK_MIN_RATING, target_rating <= DISMISS_MAX_RATING
    seen = [list(c.history) for c in cases]
    histories = {
        "protocol": seen,
        "serving": [
            [i for i in c.history if rating[(c.user_id, i)] > DISMISS_MAX_RATING] for c in cases
        ],
    }
    figures: dict[str, Any] = {
        "dataset": dataset,
        "test_requests": len(cases),
        "test_users": len(set(users)),
        "liked_targets": int(liked.sum()),
        "disliked_targets": int(disliked.sum()),
        "without_train_dismissals": models["without"].metadata.get("train_dismissals", 0),
        "with_train_dismissals": models["with"].metadata.get("train_dismissals"),
        "with_dismissal_weight": models["with"]
        .metadata.get("train_config", {})
        .get("dismissal_weight"),
    }
    for name, checkpoint in models.items():
        figures[f"{name}_best_epoch"] = checkpoint.metadata.get("best_epoch")
        figures[f"{name}_train_seconds"] = checkpoint.metadata.get("train_seconds")
    for kind, kind_histories in histories.items():
        hits, gains = {}, {}
        for name, checkpoint in models.items():
            ranks = _ranks(checkpoint, kind_histories, seen, [c.target for c in cases])
            hits[name] = (ranks <= K).astype(np.float64)
            gains[name] = ndcg_gains(ranks, K)
            p = f"{name}_{kind}_"
            figures[p + "ndcg10"] = float(gains[name].mean())
            figures[p + "hr10"] = float(hits[name].mean())
            figures[p + "liked_hr10"] = float(hits[name][liked].mean())
            figures[p + "disliked_hr10"] = float(hits[name][disliked].mean())
        for metric, values, mask in (
            ("ndcg10", gains, slice(None)),
            ("hr10", hits, slice(None)),
            ("liked_hr10", hits, liked),
            ("disliked_hr10", hits, disliked),
        ):
            diff, low, high = _paired_interval(
                values["with"][mask], values["without"][mask], users[mask], seed
            )
            figures[f"{kind}_{metric}_diff"] = diff
            figures[f"{kind}_{metric}_diff_ci95_low"] = low
            figures[f"{kind}_{metric}_diff_ci95_high"] = high
    return figures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", default="ml-latest-small", choices=("ml-latest-small", "ml-1m")
    )
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--without", type=Path, required=True, help="temporal checkpoint")
    parser.add_argument(
        "--with", dest="with_", type=Path, required=True, help="same, trained with --dismissals"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)


def command(args: argparse.Namespace) -> int:
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            figures = measure(args.dataset, args.data, args.without, args.with_, args.seed)
    finally:
        torch.set_num_threads(torch_threads)
    figures["machine"] = machine_description()
    print_figures(figures)
    write_json(args.json, figures)
    return 0
