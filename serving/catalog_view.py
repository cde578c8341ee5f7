"""The serving process's in-process view of the catalogue, refreshed from the online item features.

Per-candidate feature reads at request time are the latency trap (DESIGN §3), so serving keeps
item metadata and popularity in process and re-reads them in the background. Popularity rows are
referenced at their own event time; they are decayed to the newest event time seen in the batch so
that items compare on one clock (event time, never the wall clock).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from features.ports import OnlineFeatureReader
from features.rows import ItemFeatureRow
from features.schema import POPULARITY_HALF_LIFE_MS
from retrieval.catalog import ItemCatalog, ItemMeta

READ_CHUNK = 1000


@dataclass(frozen=True)
class CatalogSnapshot:
    catalog: ItemCatalog
    popularity: dict[str, float]
    as_of_ms: int  # newest event time among the rows: "now" in event time


def popularity_at(row: ItemFeatureRow, at_ms: int) -> float:
    """The row's decayed popularity seen from event time ``at_ms`` (see features/FEATURES.md)."""
    return row.popularity * 2.0 ** (-(at_ms - row.event_time_ms) / POPULARITY_HALF_LIFE_MS)


def load_snapshot(features: OnlineFeatureReader, item_ids: Sequence[str]) -> CatalogSnapshot:
    """Read every item's online row in chunks; items with no row yet keep bare metadata."""
    rows: dict[str, ItemFeatureRow] = {}
    for start in range(0, len(item_ids), READ_CHUNK):
        rows.update(features.read_items(list(item_ids[start : start + READ_CHUNK])))
    as_of = max((r.event_time_ms for r in rows.values()), default=0)
    catalog = ItemCatalog(
        ItemMeta(
            item_id=item_id,
            title=row.title,
            categories=tuple(row.categories),
            available=row.available,
            created_time_ms=row.created_time_ms or 0,
        )
        if (row := rows.get(item_id)) is not None
        else ItemMeta(item_id=item_id)
        for item_id in item_ids
    )
    popularity = {i: popularity_at(r, as_of) for i, r in rows.items() if r.popularity > 0}
    return CatalogSnapshot(catalog=catalog, popularity=popularity, as_of_ms=as_of)
