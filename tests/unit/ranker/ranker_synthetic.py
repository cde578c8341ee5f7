"""Synthetic MovieLens-shaped data with a learnable sequential pattern (shared by the tests).

Every user walks through the catalogue in order (item k is followed by item k+1, cyclically),
starting at a random item, one event per hour. A sequential model can learn "next = last + 1";
popularity cannot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

GENRES = ("Action", "Comedy", "Drama", "Horror")


def synthetic_ratings(
    n_users: int = 60, n_items: int = 40, length: int = 15, seed: int = 0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = int(rng.integers(n_items))
        first_hour = int(rng.integers(0, 400))
        for step in range(length):
            item = (start + step) % n_items
            rows.append((f"u{u}", f"i{item}", 4.0, (first_hour + step) * 3_600_000))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp_ms"])
    frame["rating"] = frame["rating"].astype("float32")
    return frame.sort_values(["timestamp_ms", "user_id", "item_id"], kind="stable").reset_index(
        drop=True
    )


def synthetic_items(n_items: int = 40) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(n_items)],
            "title": [f"Movie {k}" for k in range(n_items)],
            "categories": [(GENRES[k % 4], GENRES[(k // 4) % 4]) for k in range(n_items)],
        }
    )


def write_movielens_small_layout(folder: Path, ratings: pd.DataFrame, items: pd.DataFrame) -> Path:
    """Write ``ratings.csv``/``movies.csv`` as ml-latest-small has them (numeric ids, seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "userId": ratings["user_id"].str[1:].astype(int),
            "movieId": ratings["item_id"].str[1:].astype(int),
            "rating": ratings["rating"],
            "timestamp": ratings["timestamp_ms"] // 1000,
        }
    ).to_csv(folder / "ratings.csv", index=False)
    pd.DataFrame(
        {
            "movieId": items["item_id"].str[1:].astype(int),
            "title": items["title"],
            "genres": ["|".join(c) for c in items["categories"]],
        }
    ).to_csv(folder / "movies.csv", index=False)
    return folder
