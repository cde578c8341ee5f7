"""Co-occurrence candidates: the best successors of the user's recent items (reading side only).

The stream worker counts item-to-item transitions (``streams.transitions``: the increments of one
applied event) into the transition store that ``features.transition_store`` owns (keys, Redis and
in-memory stores); this source only reads neighbours through ``TransitionReader``.
"""

from __future__ import annotations

import numpy as np

from features.transition_store import TransitionReader
from retrieval.catalog import ItemCatalog
from retrieval.catalog_index import EligibleItems
from retrieval.sources import Candidate, RetrievalRequest, best_first


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

    def _anchors(self, request: RetrievalRequest) -> list[str]:
        return list(dict.fromkeys(reversed(request.history)))[: self.anchors]  # newest first

    def ranked_indices(self, request: RetrievalRequest, eligible: EligibleItems) -> np.ndarray:
        """``candidates`` as catalogue rows (the serving path): the same sums, added in the same
        order (anchor by anchor), so the scores and their order are the same."""
        recent = self._anchors(request)
        found = self.store.neighbour_arrays(recent, max(self.per_anchor, request.k))
        rows, parts = [], []
        for step, anchor in enumerate(recent):
            if anchor in found:
                ids, probabilities = found[anchor]
                rows.append(eligible.index.rows_aligned(ids))
                parts.append(self.decay**step * probabilities)
        if not rows:
            return eligible.keep(np.zeros(0, dtype=np.int64))
        all_rows, all_parts = np.concatenate(rows), np.concatenate(parts)
        known = all_rows >= 0
        items, position = np.unique(all_rows[known], return_inverse=True)
        scores = np.bincount(position, weights=all_parts[known])
        return eligible.best_first(items, scores, request.k)

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
