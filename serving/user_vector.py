"""One user vector per request, for retrieval and ranking alike.

When Milvus holds the ranker's own item embeddings, the ranker's ``encode_user`` drives the ANN
(and content) sources (``retrieval.build_retriever.choose_user_encoder``), and ``Ranker.score`` would
encode the same history again. ``SASRecRanker`` documents that its scores are
``item_embeddings()[1] @ encode_user(history)`` (tied embeddings), so ``VectorScorer`` turns the
vector the pipeline already has into the ranker's scores: one transformer pass per request
instead of two (or three with the content source). Unknown candidates get the ranker's
``UNKNOWN_ITEM_SCORE``, as in ``Ranker.score``; scores agree with it up to float rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from core.per_snapshot import PerSnapshot
from ranker.scoring import UNKNOWN_ITEM_SCORE


@runtime_checkable
class EmbeddingRanker(Protocol):
    """A ranker whose scores are its item embeddings times its user vector."""

    model_version: str

    def encode_user(self, history: Sequence[str]) -> np.ndarray: ...

    def item_embeddings(self) -> tuple[list[str], np.ndarray]: ...


class VectorScorer:
    """``Ranker.score`` from a user vector already encoded by that ranker.

    ``extra``: vectors of items the ranker was not trained on but that live in its item space
    (new items whose text embedding the index's content map put there, ``retrieval.content``):
    they are scored like the ranker's own items instead of sinking to ``UNKNOWN_ITEM_SCORE``.
    """

    def __init__(
        self, ranker: EmbeddingRanker, extra: Mapping[str, np.ndarray] | None = None
    ) -> None:
        item_ids, matrix = ranker.item_embeddings()
        self.model_version = ranker.model_version
        self._row = {item_id: row for row, item_id in enumerate(item_ids)}
        base = np.asarray(matrix, dtype=np.float32)
        added: list[np.ndarray] = []
        for item_id, vector in (extra or {}).items():
            if item_id not in self._row:
                self._row[item_id] = len(base) + len(added)
                added.append(np.asarray(vector, dtype=np.float32))
        # One extra row of zeros for unknown candidates, overwritten below: no per-item branch.
        self._matrix = np.vstack([base, *(v[None, :] for v in added), np.zeros_like(base[:1])])
        # Catalogue row -> matrix row, per catalogue snapshot (its ``ids`` list: ``score_rows``).
        self._rows_of: PerSnapshot[Sequence[str], np.ndarray] = PerSnapshot(self._matrix_rows)

    def score(self, user_vector: np.ndarray, candidates: Sequence[str]) -> np.ndarray:
        """(len(candidates),) float32, higher is better."""
        unknown = len(self._matrix) - 1
        rows = np.fromiter(
            (self._row.get(c, unknown) for c in candidates), dtype=np.intp, count=len(candidates)
        )
        return self._scores(user_vector, rows)

    def score_rows(
        self, user_vector: np.ndarray, ids: Sequence[str], rows: np.ndarray
    ) -> np.ndarray:
        """``score(user_vector, [ids[r] for r in rows])``: candidates as rows of a catalogue
        whose items are ``ids`` (``retrieval.catalog_index.CatalogIndex.ids``), mapped to the
        ranker's rows once per catalogue instead of once per candidate."""
        return self._scores(user_vector, self._rows_of(ids)[rows])

    def _matrix_rows(self, ids: Sequence[str]) -> np.ndarray:
        unknown = len(self._matrix) - 1
        return np.fromiter((self._row.get(i, unknown) for i in ids), dtype=np.intp, count=len(ids))

    def _scores(self, user_vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
        scores = self._matrix[rows] @ np.asarray(user_vector, dtype=np.float32)
        scores[rows == len(self._matrix) - 1] = UNKNOWN_ITEM_SCORE
        return scores
