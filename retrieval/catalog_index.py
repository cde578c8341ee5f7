"""The catalogue as arrays: each item a row number, each filter a boolean mask over the rows.

Serving retrieves with row numbers (``numpy`` int arrays) from the sources' answers to the merged
candidates, so a request touches Python objects only for the items it returns
(``retrieval.merge.CandidateRetriever``). ``CatalogIndex`` is built once per catalogue snapshot,
off the request path, from an ``ItemCatalog``:

* ``ids[row]`` / ``row_of[item_id]``: the row numbering (catalogue order);
* ``id_rank[row]``: the item's place in item-id order, so "ties by item id" is one ``lexsort``
  key (the candidate order of ``retrieval.sources.best_first``);
* ``filter_mask(filters)``: which rows pass ``ItemCatalog.passes`` (cached per filter set);
* ``eligible(request)``: that mask with the request's exclusions removed (``EligibleItems``).

An item the catalogue does not describe has no row: the array path never serves it. (The object
path, ``ItemCatalog.passes``, lets such an item through an empty filter only; the catalogue
holds every indexed and every new item, so serving has none.)
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from retrieval.catalog import ItemCatalog
from retrieval.sources import CandidateFilters, RetrievalRequest

ROW = np.int64  # dtype of row numbers


class CatalogIndex:
    """Row numbers, id order and filter masks of one catalogue snapshot (immutable)."""

    def __init__(self, catalog: ItemCatalog) -> None:
        self.catalog = catalog
        self.ids: list[str] = list(catalog)
        self.row_of: dict[str, int] = {item: row for row, item in enumerate(self.ids)}
        # Redis answers ids as bytes: looked up without decoding each.
        self._row_of_bytes = {item.encode(): row for row, item in enumerate(self.ids)}
        size = len(self.ids)
        self.id_rank = np.empty(size, dtype=ROW)
        self.id_rank[np.argsort(np.array(self.ids, dtype=object), kind="stable")] = np.arange(
            size, dtype=ROW
        )
        self.available = np.fromiter(
            (catalog[i].available for i in self.ids), dtype=bool, count=size
        )
        rows_by_category: dict[str, list[int]] = {}
        for row, item in enumerate(self.ids):
            for category in catalog[item].categories:
                rows_by_category.setdefault(category, []).append(row)
        self._category_rows = {
            c: np.asarray(rows, dtype=ROW) for c, rows in rows_by_category.items()
        }
        self._masks: dict[CandidateFilters, np.ndarray] = {}
        self._lock = threading.Lock()
        self._category_bits: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, item_ids: Iterable[str]) -> np.ndarray:
        """Row numbers of ``item_ids`` in their order; ids the catalogue lacks are left out."""
        rows = np.fromiter(map(self.row_of.get, item_ids, repeat(-1)), dtype=ROW)
        return rows[rows >= 0]

    def rows_aligned(self, item_ids: Sequence[str] | Sequence[bytes]) -> np.ndarray:
        """One row number per id, ``-1`` where the catalogue lacks it (ids as str or bytes)."""
        if not item_ids:
            return _NO_ROWS
        row_of: dict[Any, int] = (
            self._row_of_bytes if isinstance(item_ids[0], bytes) else self.row_of
        )
        return np.fromiter(map(row_of.get, item_ids, repeat(-1)), dtype=ROW, count=len(item_ids))

    def item_ids(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        ids = self.ids
        return [ids[row] for row in np.asarray(rows).tolist()]

    def category_rows(self, category: str) -> np.ndarray:
        """The rows of the items in ``category`` (none for a category no item has)."""
        return self._category_rows.get(category, _NO_ROWS)

    @property
    def category_bits(self) -> np.ndarray:
        """Each row's categories as a bitset, ``(rows, words)`` uint64
        (``category_bits``): what MMR's similarity takes, built on first use."""
        if self._category_bits is None:
            bits = category_bits([self.catalog[i].categories for i in self.ids])
            bits.flags.writeable = False
            self._category_bits = bits
        return self._category_bits

    def filter_mask(self, filters: CandidateFilters) -> np.ndarray:
        """Read-only mask of the rows passing ``filters`` (``ItemCatalog.passes``), cached."""
        mask = self._masks.get(filters)
        if mask is None:
            mask = self._build_mask(filters)
            mask.flags.writeable = False
            with self._lock:
                if len(self._masks) > 256:  # request-chosen filter sets: keep the cache bounded
                    self._masks.clear()
                self._masks[filters] = mask
        return mask

    def _build_mask(self, filters: CandidateFilters) -> np.ndarray:
        mask = self.available.copy() if filters.available_only else np.ones(len(self), bool)
        for category in filters.excluded_categories:
            mask[self.category_rows(category)] = False
        if filters.categories:
            wanted = np.zeros(len(self), dtype=bool)
            for category in filters.categories:
                wanted[self.category_rows(category)] = True
            mask &= wanted
        return mask

    def eligible(self, request: RetrievalRequest) -> EligibleItems:
        """The rows ``request`` may be given: its filters, minus its exclusions."""
        mask = self.filter_mask(request.filters).copy()
        excluded = request.exclusions
        for items in (excluded.seen, excluded.dismissed, excluded.request):
            if items:
                mask[self.rows(items)] = False
        return EligibleItems(self, mask)


def category_bits(categories: Sequence[Collection[str]]) -> np.ndarray:
    """Category sets as bitmasks, ``(n, words)`` uint64 (64 categories per word), so that an
    intersection is AND + popcount, which needs no BLAS (``serving.rerank.similarity_of``; a
    float matmul there hands a tiny product to a multi-threaded BLAS, which was 10x slower on a
    busy machine: docs/benchmarks/serving.md, "MMR re-ranking alone"). Bit ``c`` is the
    ``c``-th category in order of appearance."""
    vocabulary: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for row, cats in enumerate(categories):
        for c in cats:
            rows.append(row)
            cols.append(vocabulary.setdefault(c, len(vocabulary)))
    words = max(1, -(-len(vocabulary) // 64))
    bits = np.zeros((len(categories), words), dtype=np.uint64)
    col = np.asarray(cols, dtype=np.uint64)
    np.bitwise_or.at(
        bits,
        (np.asarray(rows, dtype=np.intp), (col // 64).astype(np.intp)),
        np.left_shift(np.uint64(1), col % np.uint64(64)),
    )
    return bits


_NO_ROWS = np.zeros(0, dtype=ROW)


@dataclass(frozen=True, slots=True)
class EligibleItems:
    """One request's view of the catalogue: ``mask[row]`` says whether the row may be served."""

    index: CatalogIndex
    mask: np.ndarray

    def keep(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` that are eligible, in their order."""
        return rows[self.mask[rows]] if rows.size else rows

    def best_first(self, rows: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        """The ``k`` best eligible ``rows`` by score, ties by item id (``best_first``)."""
        keep = self.mask[rows]
        rows, scores = rows[keep], scores[keep]
        if rows.size > k:  # only the top k are ordered; ties at the cut go by item id
            cut = np.partition(scores, rows.size - k)[rows.size - k]
            over = scores >= cut
            rows, scores = rows[over], scores[over]
        order = np.lexsort((self.index.id_rank[rows], -scores))
        return rows[order[:k]]


def first_unique(rows: np.ndarray) -> np.ndarray:
    """``rows`` with repeats removed, first occurrence kept, order kept."""
    if rows.size < 2:
        return rows
    _, first = np.unique(rows, return_index=True)
    if first.size == rows.size:
        return rows
    return rows[np.sort(first)]
