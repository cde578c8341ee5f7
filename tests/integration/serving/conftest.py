"""Serving stores for the server-process tests: a tiny MovieLens-shaped catalogue written to real
Redis/Feast and Milvus Lite as ``aether bench serve`` writes ML-1M (``benchmarks.serve``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.serve_stores import Prepared, prepare_stores
from core.settings import Settings


def tiny_movielens(users: int = 30, items: int = 60, seed: int = 0) -> tuple[pd.DataFrame, ...]:
    """Ratings and items shaped like ``interactions.movielens`` returns them."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(users):
        for n, item in enumerate(rng.choice(items, size=12, replace=False)):
            rows.append((str(user), str(item), 4.0, 1_000_000 + user * 100 + n))
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp_ms"])
    ratings = ratings.sort_values("timestamp_ms", kind="stable").reset_index(drop=True)
    catalogue = pd.DataFrame(
        {
            "item_id": [str(i) for i in range(items)],
            "title": [f"Movie {i}" for i in range(items)],
            "categories": [("Drama",) if i % 2 else ("Comedy",) for i in range(items)],
        }
    )
    return ratings, catalogue


@pytest.fixture
def tiny_stores(settings: Settings, make_topics) -> Prepared:
    """30 users × 12 ratings over 60 items, prepared for a server of ``settings``' namespace
    (impressions go to its topic)."""
    make_topics(settings)
    ratings, catalogue = tiny_movielens()
    return prepare_stores(settings, ratings, catalogue)
