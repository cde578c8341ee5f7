"""Dismissals in training data: MovieLens has none, so low ratings stand in for them. Pure.

The same mapping as the replay and the demo (``interactions.replay``): a rating ``<= 2`` is a
dismissal (``DISMISS_MAX_RATING``). ``with_dismissals`` takes a split's training sequences,
moves those items out of them — serving's ``recent_items`` leaves dismissed items out too, so the
ranker is trained on the histories it will be served with — and records, per user, each
dismissal with the number of training items before it: the point in the sequence where the
ranker's state should have put the item low (``ranker.dismissals``). Validation and test requests
are not touched, so a ranker trained with and one without dismissals answer the same requests.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from interactions.replay import DISMISS_MAX_RATING
from interactions.sequences import Split


def with_dismissals(
    split: Split, ratings: pd.DataFrame, max_rating: float = DISMISS_MAX_RATING
) -> Split:
    """``split`` with its low-rated training items turned into dismissals.

    ``ratings`` must hold the ``rating`` of every (user, item) in the training sequences
    (MovieLens has one rating per pair).
    """
    low = ratings[ratings["rating"] <= max_rating]
    dismissed_pairs = set(zip(low["user_id"].astype(str), low["item_id"].astype(str), strict=True))
    train: dict[str, list[str]] = {}
    dismissals: dict[str, tuple[tuple[int, str], ...]] = {}
    for user, sequence in split.train.items():
        kept: list[str] = []
        mine: list[tuple[int, str]] = []
        for item in sequence:
            if (user, item) in dismissed_pairs:
                mine.append((len(kept), item))
            else:
                kept.append(item)
        train[user] = kept
        if mine:
            dismissals[user] = tuple(mine)
    return replace(split, train=train, train_dismissals=dismissals)
