"""Ranking and beyond-accuracy metrics over full-catalogue scores (pure numpy).

Conventions: ``scores`` is (N users, C catalogue items); a larger score ranks higher. A target's
rank is 1-based and **pessimistic about ties** (every other item with an equal score is counted
ahead of it), so a constant scorer cannot look good. A target that is not in the catalogue
(column ``-1``) gets rank ``C + 1``, i.e. a miss at every cut-off. Top-k lists break ties by
column order, so they are deterministic.

>>> import numpy as np
>>> ranks = target_ranks(np.array([[0.1, 0.9, 0.5]]), np.array([2]))
>>> ranks.tolist()
[2]
>>> round(float(ndcg_at_k(ranks, 10)), 4)
0.6309
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def target_ranks(scores: np.ndarray, target_columns: np.ndarray) -> np.ndarray:
    """1-based rank of each row's target among all columns (pessimistic ties)."""
    scores = np.asarray(scores)
    target_columns = np.asarray(target_columns, dtype=np.int64)
    n, c = scores.shape
    ranks = np.full(n, c + 1, dtype=np.int64)
    known = target_columns >= 0
    if known.any():
        rows = np.flatnonzero(known)
        target_scores = scores[rows, target_columns[rows]][:, None]
        at_least = (scores[rows] >= target_scores).sum(axis=1)  # includes the target itself
        ranks[rows] = at_least
    return ranks


def ndcg_gains(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-request NDCG@k with one relevant item: 1/log2(rank + 1) if rank <= k, else 0."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean NDCG@k with one relevant item per request: 1/log2(rank + 1) if rank <= k."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        return float("nan")
    return float(ndcg_gains(ranks, k).mean())


def relative_gain_ci(
    ranks: np.ndarray,
    reference_ranks: np.ndarray,
    k: int = 10,
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    groups: Sequence[str] | np.ndarray | None = None,
) -> tuple[float, float, float]:
    """NDCG@k of ``ranks`` relative to ``reference_ranks`` on the same requests, with a CI.

    Returns ``(gain, low, high)``: ``gain = ndcg / reference_ndcg - 1`` and the percentile
    interval of that ratio over ``resamples`` paired bootstrap resamples of the requests (both
    methods resampled together, so the shared difficulty of a request cancels). With
    ``groups`` (one label per request, e.g. the user), whole groups are resampled instead: the
    requests of one user are not independent, and pretending they are narrows the interval.
    """
    gains = ndcg_gains(ranks, k)
    reference = ndcg_gains(reference_ranks, k)
    if gains.shape != reference.shape or gains.size == 0:
        raise ValueError("relative_gain_ci needs the same, non-empty set of requests for both")
    if reference.sum() == 0:
        return float("nan"), float("nan"), float("nan")
    if groups is not None:
        if len(groups) != gains.size:
            raise ValueError("relative_gain_ci needs one group label per request")
        _, members = np.unique(np.asarray(groups), return_inverse=True)
        gains = np.bincount(members, weights=gains)  # per group sums
        reference = np.bincount(members, weights=reference)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, gains.size, size=(resamples, gains.size))
    ratio = gains[picks].sum(axis=1) / np.maximum(reference[picks].sum(axis=1), 1e-12) - 1.0
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(ratio, [tail, 100 - tail])
    return float(gains.sum() / reference.sum() - 1.0), float(low), float(high)


def hit_rate_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of requests whose target is in the top k."""
    ranks = np.asarray(ranks)
    return float((ranks <= k).mean()) if ranks.size else float("nan")


def mean_reciprocal_rank(ranks: np.ndarray) -> float:
    """Mean of 1/rank over the full ranking (no cut-off)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return float((1.0 / ranks).mean()) if ranks.size else float("nan")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(N, k) column indices of the k best scores per row, best first; ties by column order."""
    scores = np.asarray(scores)
    k = min(k, scores.shape[1])
    # argpartition is O(C); then sort the k survivors (stable on equal scores by column index).
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part.sort(axis=1)
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def catalogue_coverage(top_lists: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one list."""
    return float(np.unique(np.asarray(top_lists)).size / n_items) if n_items else float("nan")


def exposure_counts(top_lists: np.ndarray, n_items: int) -> np.ndarray:
    """How many list slots each catalogue item received: (C,)."""
    return np.bincount(np.asarray(top_lists).ravel(), minlength=n_items)


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 = equal exposure, -> 1 = one item gets all)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    total = x.sum()
    if n == 0 or total == 0:
        return 0.0
    i = np.arange(1, n + 1)
    # equal values give 0 exactly in arithmetic, ±1e-17 in floats: clamp the rounding away
    return float(np.clip(((2 * i - n - 1) * x).sum() / (n * total), 0.0, 1.0))


def popular_slot_share(top_lists: np.ndarray, popular_columns: np.ndarray) -> float:
    """Share of list slots that go to the ``popular_columns`` (e.g. the top 1 % items)."""
    top_lists = np.asarray(top_lists)
    if top_lists.size == 0:
        return float("nan")
    return float(np.isin(top_lists, popular_columns).mean())


def top_popular_columns(popularity: np.ndarray, share: float = 0.01) -> np.ndarray:
    """Columns of the ``share`` most popular items (at least one)."""
    n = max(1, round(len(popularity) * share))
    return np.argsort(-np.asarray(popularity), kind="stable")[:n]


def intra_list_diversity(top_lists: np.ndarray, item_categories: Sequence[frozenset[str]]) -> float:
    """Mean over lists of 1 - mean pairwise Jaccard similarity of the items' category sets.

    Two items that both have no category count as identical (similarity 1).
    """
    vocab = sorted({c for cats in item_categories for c in cats})
    position = {c: j for j, c in enumerate(vocab)}
    matrix = np.zeros((len(item_categories), max(1, len(vocab))), dtype=np.float64)
    for row, cats in enumerate(item_categories):
        for c in cats:
            matrix[row, position[c]] = 1.0
    values = []
    for items in np.asarray(top_lists):
        if len(items) < 2:
            continue
        g = matrix[items]  # (k, G)
        inter = g @ g.T
        sizes = g.sum(axis=1)
        union = sizes[:, None] + sizes[None, :] - inter
        sim = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 1.0)
        upper = np.triu_indices(len(items), k=1)
        values.append(1.0 - sim[upper].mean())
    return float(np.mean(values)) if values else float("nan")


def novelty(top_lists: np.ndarray, popularity: np.ndarray, n_users: int) -> float:
    """Mean self-information -log2(p) of recommended items, p = share of users who had the item."""
    p = (np.asarray(popularity, dtype=np.float64) + 1.0) / (
        n_users + 1.0
    )  # +1: unseen items finite
    return (
        float((-np.log2(p[np.asarray(top_lists)])).mean())
        if np.asarray(top_lists).size
        else float("nan")
    )
