"""Glue between the MovieLens frames (``interactions.movielens``) and retrieval.

MovieLens has no catalogue creation times; an item's first rating time stands in for it (the
moment it became visible to users), and every item is available.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.index import ItemRows


def catalog_from_movielens(items: pd.DataFrame, ratings: pd.DataFrame) -> ItemCatalog:
    first_seen = ratings.groupby("item_id")["timestamp_ms"].min().to_dict()
    latest = int(ratings["timestamp_ms"].max()) if len(ratings) else 0
    return ItemCatalog(
        ItemMeta(
            item_id=str(row.item_id),
            title=str(row.title),
            categories=tuple(row.categories),
            available=True,
            # never rated: treat as created at the end of the log (the newest items)
            created_time_ms=int(first_seen.get(row.item_id, latest)),
        )
        for row in items.itertuples(index=False)
    )


def item_rows(item_ids: Sequence[str], matrix: np.ndarray, catalog: ItemCatalog) -> ItemRows:
    """Rows for Milvus with each item's metadata (items unknown to the catalogue get defaults)."""
    metas = [catalog.get(i) for i in item_ids]
    return ItemRows(
        item_ids=list(item_ids),
        vectors=matrix,
        categories=[m.categories if m else () for m in metas],
        available=[m.available if m else True for m in metas],
        created_time_ms=[m.created_time_ms if m else 0 for m in metas],
    )
