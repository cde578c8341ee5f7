"""In-process item metadata used to apply filters exactly (categories, availability, created time).

Filled from catalog events (``events.CatalogItem``), from ``features.rows.ItemFeatureRow`` rows, or
from a MovieLens items frame. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from retrieval.sources import CandidateFilters


@dataclass(frozen=True, slots=True)
class ItemMeta:
    item_id: str
    title: str = ""
    categories: tuple[str, ...] = ()
    available: bool = True
    created_time_ms: int = 0


class ItemCatalog(Mapping[str, ItemMeta]):
    """A read-mostly mapping ``item_id -> ItemMeta`` with filter helpers."""

    def __init__(self, items: Iterable[ItemMeta] = ()) -> None:
        self._items: dict[str, ItemMeta] = {m.item_id: m for m in items}

    def __getitem__(self, item_id: str) -> ItemMeta:
        return self._items[item_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def upsert(self, meta: ItemMeta) -> None:
        self._items[meta.item_id] = meta

    def passes(self, item_id: str, filters: CandidateFilters) -> bool:
        """Whether ``item_id`` satisfies ``filters``; unknown items pass only an empty filter."""
        if filters.is_empty:
            return True
        meta = self._items.get(item_id)
        if meta is None:
            return False
        if filters.available_only and not meta.available:
            return False
        if not filters.excluded_categories.isdisjoint(meta.categories):
            return False
        return not filters.categories or not filters.categories.isdisjoint(meta.categories)

    @classmethod
    def from_feature_rows(cls, rows: Iterable[object]) -> ItemCatalog:
        """Build from ``features.rows.ItemFeatureRow``-like objects (duck-typed, no import)."""
        return cls(
            ItemMeta(
                item_id=row.item_id,  # type: ignore[attr-defined]
                title=row.title,  # type: ignore[attr-defined]
                categories=tuple(row.categories),  # type: ignore[attr-defined]
                available=row.available,  # type: ignore[attr-defined]
                created_time_ms=row.created_time_ms or 0,  # type: ignore[attr-defined]
            )
            for row in rows
        )
