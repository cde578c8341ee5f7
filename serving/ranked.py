"""Ranked candidates as arrays, best first: what rules, MMR and exploration take (issue 19).

The pipeline ranks the merged candidates (``retrieval.merge.MergedRows``) into ``RankedRows``:
catalogue rows, the ranker's raw scores and each item's source label as an index into
``names``. Filters, boosts (``serving.rules.CatalogueRules``), MMR (``serving.rerank.mmr_select``)
and the exploration pool (``serving.exploration_slots.exploration_pool``) work on these arrays;
``ScoredItem`` objects are made only for the items a slate takes (``items``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.catalog_index import CatalogIndex
from serving.rerank import ScoredItem


@dataclass(frozen=True, eq=False)
class RankedRows:
    """Candidates best first: item ``n`` is ``index.ids[rows[n]]``, with raw score ``scores[n]``
    (float64) and source ``names[labels[n]]``."""

    index: CatalogIndex
    rows: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]

    @classmethod
    def of_items(cls, items: Sequence[ScoredItem], index: CatalogIndex | None = None) -> RankedRows:
        """``items`` as arrays, in their order (for tests); without ``index``, a
        catalogue of these items alone (no categories)."""
        if index is None:
            index = CatalogIndex(ItemCatalog(ItemMeta(i.item_id) for i in items))
        rows = index.rows_aligned([i.item_id for i in items])
        if (rows < 0).any():
            raise ValueError("every item must be in the catalogue index")
        names = tuple(dict.fromkeys(i.source for i in items))
        code = {name: n for n, name in enumerate(names)}
        return cls(
            index=index,
            rows=rows,
            scores=np.asarray([i.score for i in items], dtype=np.float64),
            labels=np.asarray([code[i.source] for i in items], dtype=np.intp),
            names=names,
        )

    def __len__(self) -> int:
        return int(self.rows.size)

    def take(self, positions: np.ndarray) -> RankedRows:
        """The items at ``positions``, in that order."""
        return RankedRows(
            self.index,
            self.rows[positions],
            self.scores[positions],
            self.labels[positions],
            self.names,
        )

    def rescored(self, scores: np.ndarray) -> RankedRows:
        """The same items with ``scores`` (same order)."""
        return RankedRows(self.index, self.rows, scores, self.labels, self.names)

    def labelled(self, names: Collection[str]) -> np.ndarray:
        """Per item, whether its source is one of ``names``."""
        table = np.fromiter((name in names for name in self.names), dtype=bool)
        return table[self.labels]

    def item_ids(self, positions: Sequence[int] | np.ndarray) -> list[str]:
        ids, rows = self.index.ids, self.rows
        return [ids[rows[p]] for p in np.asarray(positions, dtype=np.intp).tolist()]

    def items(self, positions: Sequence[int] | np.ndarray | None = None) -> list[ScoredItem]:
        """``ScoredItem``s of the items at ``positions`` (all, best first, when None)."""
        picked = np.arange(len(self)) if positions is None else np.asarray(positions, dtype=np.intp)
        ids, names = self.index.ids, self.names
        return [
            ScoredItem(ids[row], score, names[label])
            for row, score, label in zip(
                self.rows[picked].tolist(),
                self.scores[picked].tolist(),
                self.labels[picked].tolist(),
                strict=True,
            )
        ]

    def source_of(self, item_ids: Collection[str]) -> dict[str, str]:
        """The source label of each of ``item_ids`` that is among these items (a slate's few)."""
        found: dict[str, str] = {}
        for item_id in item_ids:
            row = self.index.row_of.get(item_id)
            at = np.flatnonzero(self.rows == row)[:1] if row is not None else ()
            if len(at):
                found[item_id] = self.names[self.labels[at[0]]]
        return found
