"""The serving process's in-process view of the catalogue, re-read in the background.

Per-candidate feature reads at request time are the latency trap (docs/benchmarks/features.md), so serving keeps
item metadata and popularity in process and re-reads them in the background
(``serving.live_state``). Which items: those of the serving index, those of the content
collection (new items the stream embedded, ``retrieval.content_index``) and those the online
store has rows for (``serving.item_discovery``): the catalogue grows while serving runs.

Metadata of an item: its online row when the stream has written one (the catalogue's newest
update, ``features/FEATURES.md``), else its content row, else bare (available, no title).

Trending ("popular"): each row's popularity is referenced at its own ``popularity_time_ms`` (the
item's latest interaction; ``event_time_ms`` for a row without one, features/FEATURES.md);
comparing items means decaying each to one time ``t``: ``p · 2^(−(t − ref)/H)``. With a one-day
half-life and data years old, that product underflows to 0.0 for most items, and a ranking of
zeros is the id order. So items are compared by the logarithm, ``log2 p − (t − ref)/H``, which is
finite for every positive popularity and orders items exactly as the decayed values would at any
common ``t`` (the ``t`` term is the same for all). ``t`` is the newest reference among the rows
that carry popularity — the data's own clock, never the wall clock (docs/architecture.md, event-time rule 4); serving's
impressions carry the serving time, so they move a row's ``event_time_ms`` but not its reference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from features.ports import OnlineFeatureReader
from features.rows import ItemFeatureRow
from features.schema import POPULARITY_HALF_LIFE_MS
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.content_index import ContentRow

READ_CHUNK = 1000


@dataclass(frozen=True)
class CatalogSnapshot:
    catalog: ItemCatalog
    popularity: dict[str, float]  # trending score per item: log2 of its popularity at as_of
    as_of_ms: int  # newest event time in the catalogue (rows, content): "now" in event time
    content: Mapping[str, ContentRow] = field(default_factory=dict)  # content rows by item


def trending_scores(rows: Iterable[ItemFeatureRow]) -> tuple[dict[str, float], int]:
    """``({item: log2 of its decayed popularity at t}, t)`` over the rows with popularity > 0,
    ``t`` their newest reference time (module docstring)."""
    carrying = {
        row.item_id: (
            row.popularity,
            row.event_time_ms if row.popularity_time_ms is None else row.popularity_time_ms,
        )
        for row in rows
        if row.popularity > 0
    }
    at_ms = max((ref for _, ref in carrying.values()), default=0)
    scores = {
        item: math.log2(value) - (at_ms - ref) / POPULARITY_HALF_LIFE_MS
        for item, (value, ref) in carrying.items()
    }
    return scores, at_ms


def _meta(item_id: str, row: ItemFeatureRow | None, content: ContentRow | None) -> ItemMeta:
    if row is not None and (row.title or row.categories or content is None):
        return ItemMeta(
            item_id=item_id,
            title=row.title,
            categories=tuple(row.categories),
            available=row.available,
            created_time_ms=row.created_time_ms or (content.created_time_ms if content else 0),
        )
    if content is not None:
        # The stream wrote no catalogue row yet (or only interactions): the content row's
        # metadata comes from the same catalogue event. An online row's availability still wins.
        meta = content.meta
        if row is not None and not row.available:
            return ItemMeta(item_id, meta.title, meta.categories, False, meta.created_time_ms)
        return meta
    return ItemMeta(item_id=item_id)


def read_rows(features: OnlineFeatureReader, item_ids: Sequence[str]) -> dict[str, ItemFeatureRow]:
    """The online rows of ``item_ids`` that exist, read ``READ_CHUNK`` at a time."""
    ids = list(item_ids)
    rows: dict[str, ItemFeatureRow] = {}
    for start in range(0, len(ids), READ_CHUNK):
        rows.update(features.read_items(ids[start : start + READ_CHUNK]))
    return rows


def catalogue_ids(item_ids: Iterable[str], content: Iterable[ContentRow]) -> list[str]:
    """The catalogue's items: ``item_ids``, then the content rows' items, each once."""
    return list(dict.fromkeys([*item_ids, *(row.item_id for row in content)]))


def compose_snapshot(
    item_ids: Sequence[str],
    rows: Mapping[str, ItemFeatureRow],
    content: Sequence[ContentRow] = (),
) -> CatalogSnapshot:
    """The catalogue of ``catalogue_ids(item_ids, content)`` from their online ``rows`` (those
    that exist) and ``content`` rows (module docstring). Pure."""
    by_content = {row.item_id: row for row in content}
    ids = catalogue_ids(item_ids, content)
    own = [rows[i] for i in ids if i in rows]
    catalog = ItemCatalog(_meta(i, rows.get(i), by_content.get(i)) for i in ids)
    popularity, _ = trending_scores(own)
    newest = [
        *(row.event_time_ms for row in own),
        *(row.event_time_ms for row in content),
        *(row.created_time_ms for row in content),
    ]
    return CatalogSnapshot(
        catalog=catalog,
        popularity=popularity,
        as_of_ms=max(newest, default=0),
        content=by_content,
    )


def changed_content(before: Mapping[str, ContentRow], after: Mapping[str, ContentRow]) -> set[str]:
    """Items whose content row was added, removed or changed (vectors aside) between two reads."""
    return {item for item in before.keys() | after.keys() if before.get(item) != after.get(item)}


def load_snapshot(
    features: OnlineFeatureReader,
    item_ids: Sequence[str],
    content: Sequence[ContentRow] = (),
) -> CatalogSnapshot:
    """Read every item's online row and compose the catalogue of ``item_ids`` and the
    ``content`` rows' items (module docstring)."""
    return compose_snapshot(
        item_ids, read_rows(features, catalogue_ids(item_ids, content)), content
    )
