"""User encoders: history (oldest first) -> a vector in the item-embedding space.

``MeanHistoryEncoder`` is the baseline: the mean of the last ``last_n`` history items' embeddings
(recency-weighted if ``decay < 1``). The ranker's encoder (``encode_user``, whose dot product with
item embeddings equals its logits) plugs into the same ``UserEncoder`` protocol.
Pure numpy: no I/O client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


class ItemEmbeddings:
    """An id -> row lookup over one float32 matrix (the same rows that were put into Milvus)."""

    def __init__(self, item_ids: Sequence[str], matrix: np.ndarray) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != len(item_ids):
            raise ValueError(f"matrix must be ({len(item_ids)}, dim), got {matrix.shape}")
        self.item_ids = [str(i) for i in item_ids]
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        self._row: Mapping[str, int] = {item: row for row, item in enumerate(self.item_ids)}

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    def rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """Row indices of the known ids among ``item_ids`` (unknown ones are skipped)."""
        return np.fromiter((self._row[i] for i in item_ids if i in self._row), dtype=np.int64)

    def vector(self, item_id: str) -> np.ndarray | None:
        row = self._row.get(item_id)
        return None if row is None else self.matrix[row]


class MeanHistoryEncoder:
    """Baseline user vector: (recency-weighted) mean of the last ``last_n`` known history items."""

    def __init__(self, embeddings: ItemEmbeddings, last_n: int = 20, decay: float = 1.0) -> None:
        if last_n < 1 or not 0.0 < decay <= 1.0:
            raise ValueError("last_n must be >= 1 and 0 < decay <= 1")
        self.embeddings = embeddings
        self.last_n = last_n
        self.decay = decay

    def encode_user(self, history: tuple[str, ...]) -> np.ndarray | None:
        rows = self.embeddings.rows(history)[-self.last_n :]
        if rows.size == 0:
            return None  # cold user: the ANN source yields nothing, other sources answer
        weights = self.decay ** np.arange(rows.size - 1, -1, -1, dtype=np.float32)
        vector = weights @ self.embeddings.matrix[rows] / weights.sum()
        return vector.astype(np.float32)
