"""ANN candidate source: the user's vector against the Milvus item index (inner product)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from retrieval.catalog_index import EligibleItems
from retrieval.sources import Candidate, CandidateFilters, RetrievalRequest, UserEncoder


class VectorSearcher(Protocol):
    """What the ANN source needs from an index (``retrieval.index.ItemIndex`` provides it)."""

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        filters: CandidateFilters | None = None,
        excluded: frozenset[str] = frozenset(),
    ) -> list[list[tuple[str, float]]]: ...


class AnnSource:
    """Nearest items to the user vector; the vector comes from the request or from ``encoder``."""

    def __init__(self, index: VectorSearcher, encoder: UserEncoder, name: str = "ann") -> None:
        self.index = index
        self.encoder = encoder
        self.name = name

    def _hits(self, request: RetrievalRequest) -> list[tuple[str, float]]:
        vector = request.user_vector
        if vector is None:
            vector = self.encoder.encode_user(request.history)
        if vector is None:
            return []
        return self.index.search(
            np.asarray(vector, dtype=np.float32)[None, :],
            request.k,
            filters=request.filters,
            excluded=request.exclusions.all(),
        )[0]

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        return [Candidate(item_id, score, self.name) for item_id, score in self._hits(request)]

    def ranked_indices(self, request: RetrievalRequest, eligible: EligibleItems) -> np.ndarray:
        """``candidates`` as catalogue rows (the serving path)."""
        return eligible.index.rows(item_id for item_id, _ in self._hits(request))
