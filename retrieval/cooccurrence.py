"""Co-occurrence candidates: the best successors of the user's recent items (reading side only).

The stream worker counts item-to-item transitions (``streams.transitions``: the increments of one
applied event) into the transition store that ``features.transition_store`` owns (keys, Redis and
in-memory stores); this source only reads neighbours through ``TransitionReader``.

On the serving path (``ranked_indices``) the source keeps each anchor's neighbours as catalogue
rows and probabilities under the stamp of the write that last changed them
(``TransitionReader.changed_neighbours``), so a request parses only anchors written since it last
read them; the answer is always what the store holds at the read. The kept rows belong to one
catalogue snapshot: a request on another one starts afresh.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from features.transition_store import TransitionReader
from retrieval.catalog import ItemCatalog
from retrieval.catalog_index import CatalogIndex, EligibleItems
from retrieval.sources import Candidate, RetrievalRequest, best_first

KEPT_ANCHORS = 8_192  # anchors kept at most (about 3 KiB each at 200 neighbours); then afresh


class _Kept(NamedTuple):
    """One anchor's neighbours as read under ``stamp``: catalogue rows (-1: not in the
    catalogue) and probabilities, the ``n`` best."""

    stamp: Any
    n: int
    rows: np.ndarray
    probabilities: np.ndarray


class CooccurrenceSource:
    """Neighbours of the user's last ``anchors`` items, weighted by ``decay`` per step back."""

    def __init__(
        self,
        store: TransitionReader,
        anchors: int = 5,
        decay: float = 0.7,
        per_anchor: int = 200,
        name: str = "cooccurrence",
        catalog: ItemCatalog | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.anchors = anchors
        self.decay = decay
        self.per_anchor = per_anchor
        self.name = name
        # (the catalogue snapshot the rows index, anchor -> _Kept); read and replaced whole, so
        # a request never mixes two snapshots' rows (threads of the retrieval pool share it)
        self._kept: tuple[CatalogIndex | None, dict[str, _Kept]] = (None, {})

    def _anchors(self, request: RetrievalRequest) -> list[str]:
        return list(dict.fromkeys(reversed(request.history)))[: self.anchors]  # newest first

    def ranked_indices(self, request: RetrievalRequest, eligible: EligibleItems) -> np.ndarray:
        """``candidates`` as catalogue rows (the serving path): the same sums, added in the same
        order (anchor by anchor), so the scores and their order are the same."""
        recent = self._anchors(request)
        n = max(self.per_anchor, request.k)
        rows, parts = [], []
        for step, kept in enumerate(self._neighbours(recent, n, eligible.index)):
            if kept.rows.size:
                rows.append(kept.rows)
                parts.append(self.decay**step * kept.probabilities)
        if not rows:
            return eligible.keep(np.zeros(0, dtype=np.int64))
        all_rows, all_parts = np.concatenate(rows), np.concatenate(parts)
        known = all_rows >= 0
        items, position = np.unique(all_rows[known], return_inverse=True)
        scores = np.bincount(position, weights=all_parts[known])
        return eligible.best_first(items, scores, request.k)

    def _neighbours(self, anchors: list[str], n: int, index: CatalogIndex) -> list[_Kept]:
        """Each anchor's ``n`` best neighbours as ``index``'s rows: those kept under the stamp
        the store still has, the others read and kept."""
        held_index, kept = self._kept
        if held_index is not index or len(kept) > KEPT_ANCHORS:
            kept = {}
            self._kept = (index, kept)
        had = [kept.get(anchor) for anchor in anchors]
        answers = self.store.changed_neighbours(
            anchors, n, [k.stamp if k is not None and k.n == n else None for k in had]
        )
        found = []
        for anchor, old, (stamp, arrays) in zip(anchors, had, answers, strict=True):
            if arrays is None:  # unchanged since the stamp named, which was ``old``'s
                assert old is not None
                found.append(old)
                continue
            ids, probabilities = arrays
            new = _Kept(stamp, n, index.rows_aligned(ids), probabilities)
            if stamp is not None:
                kept[anchor] = new
            found.append(new)
        return found

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        recent = self._anchors(request)
        if not recent:
            return []
        per_anchor = max(self.per_anchor, request.k)
        found = self.store.neighbours(recent, per_anchor)
        scores: dict[str, float] = {}
        for step, anchor in enumerate(recent):
            weight = self.decay**step
            for item, probability in found.get(anchor, []):
                scores[item] = scores.get(item, 0.0) + weight * probability
        excluded = request.exclusions.all()
        catalog, filters = self.catalog, request.filters
        ranked = best_first(
            (i, s)
            for i, s in scores.items()
            if i not in excluded and (catalog is None or catalog.passes(i, filters))
        )
        return [Candidate(i, s, self.name) for i, s in ranked[: request.k]]
