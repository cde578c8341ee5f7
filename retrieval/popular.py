"""Popular/trending items by event-time-decayed interaction mass, and recently created items.

A decayed count is held as ``(value, ref_ms)`` meaning ``value`` at time ``ref_ms``; its value at
``t >= ref_ms`` is ``value * 2**(-(t - ref_ms) / half_life_ms)``. Adding an event at any event time
gives the same state whatever the arrival order (up to float rounding): the reference time only
moves forward and earlier events are discounted to it. No wall clock: rankings are taken at an
explicit time, and since all counts decay by the same factor the ranking is the same at any time
after the last event.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.catalog import ItemCatalog
from retrieval.catalog_index import CatalogIndex, EligibleItems
from retrieval.sources import Candidate, RetrievalRequest, best_first


@dataclass(frozen=True, slots=True)
class DecayedCount:
    value: float
    ref_ms: int


def decay_add(
    state: DecayedCount | None, event_time_ms: int, weight: float, half_life_ms: float
) -> DecayedCount:
    """The count after adding ``weight`` at ``event_time_ms`` (pure)."""
    if state is None:
        return DecayedCount(weight, event_time_ms)
    if event_time_ms <= state.ref_ms:
        discount = 2.0 ** (-(state.ref_ms - event_time_ms) / half_life_ms)
        return DecayedCount(state.value + weight * discount, state.ref_ms)
    discount = 2.0 ** (-(event_time_ms - state.ref_ms) / half_life_ms)
    return DecayedCount(state.value * discount + weight, event_time_ms)


def decayed_value(state: DecayedCount, at_ms: int, half_life_ms: float) -> float:
    return state.value * 2.0 ** (-(at_ms - state.ref_ms) / half_life_ms)


class PopularityTracker:
    """Decayed counts per item (the same definition as the ``popularity`` online feature)."""

    def __init__(self, half_life_ms: float = 7 * 24 * 3600 * 1000) -> None:
        self.half_life_ms = half_life_ms
        self._counts: dict[str, DecayedCount] = {}

    def observe(self, item_id: str, event_time_ms: int, weight: float = 1.0) -> None:
        self._counts[item_id] = decay_add(
            self._counts.get(item_id), event_time_ms, weight, self.half_life_ms
        )

    def observe_many(self, events: Iterable[tuple[str, int]]) -> None:
        for item_id, event_time_ms in events:
            self.observe(item_id, event_time_ms)

    def scores_at(self, at_ms: int) -> dict[str, float]:
        return {i: decayed_value(c, at_ms, self.half_life_ms) for i, c in self._counts.items()}


def _scan(
    ranked: list[tuple[str, float]],
    request: RetrievalRequest,
    catalog: ItemCatalog | None,
    name: str,
) -> list[Candidate]:
    """Walk a ranking, skipping excluded and filtered items, until ``k`` are found."""
    found: list[Candidate] = []
    excluded, filters, k = request.exclusions.all(), request.filters, request.k
    passes = None if catalog is None or filters.is_empty else catalog.passes
    for item_id, score in ranked:
        if item_id in excluded:
            continue
        if passes is not None and not passes(item_id, filters):
            continue
        found.append(Candidate(item_id, score, name))
        if len(found) >= k:
            break
    return found


class PopularSource:
    """Most popular items by decayed count; catalogue items with no count follow (score 0).

    Because every catalogue item is in its ranking, this source returns something whenever any
    eligible item exists: the merger uses it as the never-empty fallback.
    """

    in_process = True  # no I/O: asked on the request's thread (``retrieval.merge``)

    def __init__(
        self, scores: Mapping[str, float], catalog: ItemCatalog | None = None, name: str = "popular"
    ) -> None:
        self.name = name
        self.catalog = catalog
        self._ranked = best_first(scores.items())
        if catalog is not None:
            unseen = sorted(set(catalog) - set(scores))
            self._ranked.extend((item, 0.0) for item in unseen)
        self._rows: tuple[CatalogIndex, np.ndarray] | None = None  # the ranking as rows

    @classmethod
    def from_feature_rows(
        cls, rows: Iterable[Any], catalog: ItemCatalog | None = None, name: str = "popular"
    ) -> PopularSource:
        """From ``features.rows.ItemFeatureRow`` rows (their ``popularity`` is this decayed count)."""
        return cls({row.item_id: float(row.popularity) for row in rows}, catalog, name)

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        return _scan(self._ranked, request, self.catalog, self.name)

    def ranked_indices(self, request: RetrievalRequest, eligible: EligibleItems) -> np.ndarray:
        """``candidates`` as catalogue rows (the serving path)."""
        cached = self._rows
        if cached is None or cached[0] is not eligible.index:
            cached = self._rows = (eligible.index, eligible.index.rows(i for i, _ in self._ranked))
        return eligible.keep(cached[1])[: request.k]


class FreshSource:
    """Items created within ``window_ms`` before the request time, newest first.

    The request's ``as_of_ms`` is the reference; without it, the newest created time in the
    catalogue is (never the wall clock). Items created after the reference are not yet visible.
    """

    in_process = True  # no I/O: asked on the request's thread (``retrieval.merge``)

    def __init__(
        self, catalog: ItemCatalog, window_ms: int = 30 * 24 * 3600 * 1000, name: str = "fresh"
    ) -> None:
        self.name = name
        self.catalog = catalog
        self.window_ms = window_ms
        ordered = sorted((m.created_time_ms, m.item_id) for m in catalog.values())
        self._created = [created for created, _ in ordered]  # ascending, for bisect
        self._items = [item for _, item in ordered]
        self._rows: tuple[CatalogIndex, np.ndarray] | None = None  # rows of ``_items``

    def _window(self, request: RetrievalRequest) -> tuple[int, int]:
        """``_items[start:stop]``: created within the window before the request time."""
        as_of = request.as_of_ms if request.as_of_ms is not None else self._created[-1]
        stop = bisect.bisect_right(self._created, as_of)
        return bisect.bisect_left(self._created, as_of - self.window_ms), stop

    def ranked_indices(self, request: RetrievalRequest, eligible: EligibleItems) -> np.ndarray:
        """``candidates`` as catalogue rows (the serving path)."""
        if not self._created:
            return eligible.keep(np.zeros(0, dtype=np.int64))
        cached = self._rows
        if cached is None or cached[0] is not eligible.index:
            cached = self._rows = (eligible.index, eligible.index.rows_aligned(self._items))
        start, stop = self._window(request)
        newest_first = cached[1][start:stop][::-1]
        return eligible.keep(newest_first[newest_first >= 0])[: request.k]

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        if not self._created:
            return []
        start, stop = self._window(request)
        newest_first = [
            (self._items[i], float(self._created[i])) for i in range(stop - 1, start - 1, -1)
        ]
        return _scan(newest_first, request, self.catalog, self.name)
