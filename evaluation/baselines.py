"""Strong simple baselines, fitted on exactly the training data the ranker sees.

Each one scores the whole catalogue for a batch of histories (``score_all``); the evaluation
protocol filters seen items and ranks. Ties are broken by a tiny training-popularity term so
that a baseline with many equal scores is ranked like "then most popular", never by luck.

* :class:`RecentPopular` - most interacted items within a recent event-time window.
* :class:`ItemTransition` - counts of "item a was followed by item b" in training sequences,
  scored from the user's last item (a first-order Markov chain).
* :class:`EASE` - Steck 2019, closed form ``B = I - P·diag(1/diag(P))`` with
  ``P = (XᵀX + λI)⁻¹``, zero diagonal; λ is chosen on validation by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

TIE_BREAK = 1e-6


class CatalogueIndex:
    """Item id -> catalogue column (the evaluation's column order)."""

    def __init__(self, items: Sequence[str]) -> None:
        self.items = tuple(items)
        self._column = {item: j for j, item in enumerate(self.items)}

    def __len__(self) -> int:
        return len(self.items)

    def column(self, item: str) -> int:
        return self._column.get(item, -1)

    def columns(self, items: Sequence[str]) -> np.ndarray:
        cols = [self._column.get(i, -1) for i in items]
        return np.array([c for c in cols if c >= 0], dtype=np.int64)


def popularity_counts(
    sequences: Mapping[str, Sequence[str]], catalogue: CatalogueIndex
) -> np.ndarray:
    """(C,) interactions per catalogue item in the training sequences."""
    counts = np.zeros(len(catalogue), dtype=np.float64)
    for seq in sequences.values():
        np.add.at(counts, catalogue.columns(seq), 1.0)
    return counts


def _tie_breaker(counts: np.ndarray) -> np.ndarray:
    """Maps popularity into [0, TIE_BREAK): only ever decides between equal scores."""
    top = counts.max() if counts.size and counts.max() > 0 else 1.0
    return TIE_BREAK * counts / (top + 1.0)


class RecentPopular:
    """Item counts within a recent window (``window_days=None``: all training events)."""

    name = "recent-popular"

    def __init__(
        self,
        catalogue: CatalogueIndex,
        window_items: Sequence[str],
        all_train_items: Sequence[str],
        window_days: float | None,
    ) -> None:
        recent = np.zeros(len(catalogue), dtype=np.float64)
        np.add.at(recent, catalogue.columns(list(window_items)), 1.0)
        all_time = np.zeros(len(catalogue), dtype=np.float64)
        np.add.at(all_time, catalogue.columns(list(all_train_items)), 1.0)
        self.window_days = window_days
        self.recent_counts = recent  # (C,) interactions inside the window
        self._scores = recent + _tie_breaker(all_time)

    @classmethod
    def from_events(
        cls,
        catalogue: CatalogueIndex,
        train_events: pd.DataFrame,
        cutoff_ms: int,
        window_days: float | None,
    ) -> RecentPopular:
        """Counts over events in ``[cutoff - window, cutoff)`` (point in time at ``cutoff``)."""
        past = train_events[train_events["timestamp_ms"] < cutoff_ms]
        window = past
        if window_days is not None:
            window = past[past["timestamp_ms"] >= cutoff_ms - int(window_days * 86_400_000)]
        return cls(catalogue, list(window["item_id"]), list(past["item_id"]), window_days)

    @classmethod
    def from_sequences(
        cls, catalogue: CatalogueIndex, sequences: Mapping[str, Sequence[str]]
    ) -> RecentPopular:
        """All-time popularity of the training sequences (leave-one-out has no global 'now')."""
        items = [i for seq in sequences.values() for i in seq]
        return cls(catalogue, items, items, None)

    def score_all(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        return np.tile(self._scores, (len(histories), 1))


class ItemTransition:
    """P(next = b | last = a) from consecutive pairs in the training sequences."""

    name = "item-transition"

    def __init__(self, catalogue: CatalogueIndex, sequences: Mapping[str, Sequence[str]]) -> None:
        n = len(catalogue)
        rows, cols = [], []
        for seq in sequences.values():
            idx = catalogue.columns(seq)
            rows.append(idx[:-1])
            cols.append(idx[1:])
        r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        self._counts = sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
        self._catalogue = catalogue
        self._prior = _tie_breaker(popularity_counts(sequences, catalogue))

    def score_all(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.tile(self._prior, (len(histories), 1))
        for row, history in enumerate(histories):
            last = self._catalogue.columns(list(history)[-1:])
            if last.size:
                out[row] += self._counts[last[0]].toarray()[0]
        return out


def user_item_matrix(
    sequences: Mapping[str, Sequence[str]], catalogue: CatalogueIndex
) -> sparse.csr_matrix:
    """Binary (users, C) matrix of who interacted with what."""
    rows, cols = [], []
    for u, seq in enumerate(sequences.values()):
        idx = np.unique(catalogue.columns(seq))
        rows.append(np.full(idx.size, u))
        cols.append(idx)
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    return sparse.csr_matrix((np.ones(r.size), (r, c)), shape=(len(sequences), len(catalogue)))


class EASE:
    """Embarrassingly shallow autoencoder; scores = x_user · B."""

    name = "ease"

    def __init__(
        self, catalogue: CatalogueIndex, sequences: Mapping[str, Sequence[str]], l2: float
    ) -> None:
        x = user_item_matrix(sequences, catalogue)
        gram = (x.T @ x).toarray()
        gram[np.diag_indices_from(gram)] += l2
        p = np.linalg.inv(gram)
        b = p / (-np.diag(p))
        b[np.diag_indices_from(b)] = 0.0
        self.l2 = l2
        self._weights = b.astype(np.float32)
        self._catalogue = catalogue
        self._prior = _tie_breaker(np.asarray(x.sum(axis=0)).ravel()).astype(np.float32)

    def score_all(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        x = np.zeros((len(histories), len(self._catalogue)), dtype=np.float32)
        for row, history in enumerate(histories):
            x[row, self._catalogue.columns(list(history))] = 1.0
        return x @ self._weights + self._prior
