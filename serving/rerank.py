"""Diversity re-ranking by maximal marginal relevance (MMR), pure and deterministic.

MMR (Carbonell & Goldstein, 1998) builds the slate greedily; at each step it takes the candidate
that maximises::

    lambda * relevance(i) - (1 - lambda) * max_{j already chosen} similarity(i, j)

``lambda = 1`` keeps the ranker order; ``lambda = 0`` only avoids repeating what is already there.

* **Relevance.** Ranker scores are arbitrary reals (logits, dot products, popularity counts), so
  they are first mapped to ``[0, 1]`` to be commensurable with similarities in ``[0, 1]``:
  ``"minmax"`` (default) keeps the score gaps, ``(s - min) / (max - min)`` (all 1 when every score is
  equal); ``"rank"`` uses only the order, ``1 - position / n``, which is robust to outlying scores.
* **Similarity.** Jaccard over item categories and/or cosine over item vectors. For a pair, each
  measure counts only when both items have data for it (categories non-empty, a vector present);
  when both measures count, their mean is used; when none does, the similarity is 0. Cosine is
  clipped to ``[0, 1]`` (an opposite item is not "more diverse" than an unrelated one).
* **Caps.** Optional hard caps (``category_caps``, ``default_cap``): an item is skipped while any
  of its categories already fills its cap in the slate, so the slate can come out shorter than ``k``
  when the caps leave too few eligible items.
* **Determinism.** No randomness; ties (equal MMR values) go to the higher ranker score, then to
  the earlier item in the input.

Cost: one ``(n, n)`` similarity matrix per call, then ``O(n)`` numpy work per pick.

Two entry points, one algorithm: ``mmr_select`` works on arrays (scores, and a similarity built
from category bitsets and unit vectors: ``similarity_of``), as serving calls it with its
catalogue's rows (``serving.pipeline.diversify``); ``mmr_rerank`` takes ``ScoredItem``s and
builds those arrays from the items.
``python -m serving.rerank`` times ``k = 50`` from ``n = 200``; its figures are in
docs/benchmarks/serving.md ("MMR re-ranking alone").

Example::

    >>> items = [ScoredItem("a", 3.0, "ann"), ScoredItem("b", 2.9, "ann"), ScoredItem("c", 1.0, "popular")]
    >>> cats = {"a": ("Drama",), "b": ("Drama",), "c": ("Comedy",)}
    >>> [i.item_id for i in mmr_rerank(items, 2, categories_of=cats.get, lambda_=0.5)]
    ['a', 'c']
    >>> [i.item_id for i in mmr_rerank(items, 2, categories_of=cats.get, lambda_=1.0)]
    ['a', 'b']
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from retrieval.catalog_index import category_bits

CategoriesOf = Callable[[str], Collection[str] | None]
Normalisation = Literal["minmax", "rank"]
UnitVectors = tuple[np.ndarray, np.ndarray]  # (unit rows (n, d) float32, has_vector (n,) bool)


@dataclass(frozen=True, slots=True)
class ScoredItem:
    """One ranked candidate: the currency of re-ranking and business rules.

    ``score`` is the ranker's raw score (kept unchanged by MMR); ``source`` is the candidate source
    that produced the item (``ann``, ``popular``, … or ``pinned`` for rule-pinned items).
    """

    item_id: str
    score: float
    source: str


def categories_from_catalog(catalog: Mapping[str, object]) -> CategoriesOf:
    """``categories_of`` for an ``ItemCatalog`` (any mapping to objects with ``.categories``)."""

    def categories_of(item_id: str) -> Collection[str]:
        meta = catalog.get(item_id)
        return getattr(meta, "categories", ()) if meta is not None else ()

    return categories_of


def normalise_relevance(scores: Sequence[float], how: Normalisation = "minmax") -> np.ndarray:
    """Map raw scores (in input order) to ``[0, 1]``; see the module docstring."""
    values = np.asarray(scores, dtype=np.float64)
    n = values.size
    if n == 0:
        return values
    if how == "rank":
        # Position in the score order (stable: equal scores keep input order).
        order = np.argsort(-values, kind="stable")
        relevance = np.empty(n)
        relevance[order] = 1.0 - np.arange(n) / n
        return relevance
    if how != "minmax":
        raise ValueError(f"unknown normalisation {how!r}; use 'minmax' or 'rank'")
    low, high = float(values.min()), float(values.max())
    if not np.isfinite(low) or not np.isfinite(high):
        raise ValueError("scores must be finite")
    if high == low:
        return np.ones(n)
    return (values - low) / (high - low)


def similarity_matrix(
    item_ids: Sequence[str],
    categories: Sequence[Collection[str]] | None,
    vectors: Mapping[str, np.ndarray] | None,
) -> np.ndarray:
    """Pairwise similarity ``(n, n)`` in ``[0, 1]`` over one candidate pool (module docstring):
    ``similarity_of`` the pool's category bitsets and unit vectors."""
    bits = category_bits(categories) if categories is not None else None
    unit = unit_vectors(item_ids, vectors) if vectors is not None else None
    return similarity_of(len(item_ids), bits, unit)


def unit_vectors(item_ids: Sequence[str], vectors: Mapping[str, np.ndarray]) -> UnitVectors | None:
    """``(unit, has_vector)``: each item's vector scaled to length 1, ``(n, d)`` float32 (zero
    where the item has none, or a zero vector), and which items have one; ``None`` when none
    has."""
    found = [vectors.get(i) for i in item_ids]
    has_vector = np.array([v is not None for v in found], dtype=bool)
    if not has_vector.any():
        return None
    zero = np.zeros(len(next(v for v in found if v is not None)))
    matrix = np.array([zero if v is None else v for v in found], dtype=np.float32)
    return unit_rows(matrix), has_vector


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def similarity_of(n: int, bits: np.ndarray | None, unit: UnitVectors | None) -> np.ndarray:
    """Pairwise similarity ``(n, n)`` of ``n`` items from their category bitsets
    (``category_bits``, or rows of a catalogue's) and unit vectors (``(unit, has_vector)``, as
    ``unit_vectors``); either may be ``None`` (no such data). Built once per request; few
    full-matrix passes, because at n = 200 each pass costs about as much as the whole greedy
    loop."""
    jaccard = has_categories = cosine = has_vector = None
    if bits is not None:
        sizes = np.bitwise_count(bits).sum(axis=1).astype(np.float32)
        if bits.shape[1] == 1:
            overlap = np.bitwise_count(bits[:, 0][:, None] & bits[:, 0][None, :]).astype(np.float32)
        else:
            overlap = np.bitwise_count(bits[:, None, :] & bits[None, :, :]).sum(axis=2)
            overlap = overlap.astype(np.float32)
        # union is 0 only when both sets are empty, where overlap is 0 too: 0 / 1 = 0.
        union = np.maximum(sizes[:, None] + sizes[None, :] - overlap, 1.0)
        jaccard = np.divide(overlap, union, out=overlap)
        has_categories = sizes > 0
    if unit is not None and unit[1].any():
        matrix, has_vector = unit
        # Rows without a vector are zero, so their cosine is 0 (= "no evidence").
        cosine = np.clip(matrix @ matrix.T, 0.0, 1.0)
    if jaccard is None or has_categories is None:
        return cosine if cosine is not None else np.zeros((n, n))
    if cosine is None or has_vector is None:
        return jaccard
    # Both measures: the mean of those that count for the pair.
    if has_categories.all() and has_vector.all():  # the common case: every pair has both
        jaccard += cosine
        jaccard *= 0.5
        return jaccard
    counted = np.add(
        np.outer(has_categories, has_categories), np.outer(has_vector, has_vector), dtype=np.float32
    )
    return np.divide(
        jaccard + cosine, counted, out=np.zeros((n, n), dtype=np.float32), where=counted > 0
    )


def mmr_rerank(
    items: Sequence[ScoredItem],
    k: int,
    *,
    lambda_: float = 0.7,
    categories_of: CategoriesOf | None = None,
    vectors: Mapping[str, np.ndarray] | None = None,
    normalisation: Normalisation = "minmax",
    category_caps: Mapping[str, int] | None = None,
    default_cap: int | None = None,
) -> list[ScoredItem]:
    """The top ``k`` of ``items`` (ranker order, best first) re-ranked by MMR.

    Without ``categories_of`` and ``vectors`` there is no similarity, so the result is the
    relevance order (with caps, if any). Items are returned unchanged (raw ranker scores).
    ``mmr_select`` on the items' scores, categories and vectors.
    """
    item_ids = [item.item_id for item in items]
    categories: list[tuple[str, ...]] | None = None

    def categories_at(n: int) -> tuple[str, ...]:
        nonlocal categories
        if categories is None:
            assert categories_of is not None
            categories = [tuple(categories_of(i) or ()) for i in item_ids]
        return categories[n]

    def similarity(order: np.ndarray) -> np.ndarray:
        ids = [item_ids[n] for n in order.tolist()]
        cats = [categories_at(n) for n in order.tolist()] if categories_of is not None else None
        return similarity_matrix(ids, cats, vectors)

    picked = mmr_select(
        np.asarray([item.score for item in items], dtype=np.float64),
        k,
        lambda_=lambda_,
        similarity=similarity if categories_of is not None or vectors is not None else None,
        categories_at=categories_at if categories_of is not None else None,
        normalisation=normalisation,
        category_caps=category_caps,
        default_cap=default_cap,
    )
    return [items[n] for n in picked]


def mmr_select(
    scores: np.ndarray,
    k: int,
    *,
    lambda_: float = 0.7,
    similarity: Callable[[np.ndarray], np.ndarray] | None = None,
    categories_at: Callable[[int], Collection[str]] | None = None,
    normalisation: Normalisation = "minmax",
    category_caps: Mapping[str, int] | None = None,
    default_cap: int | None = None,
) -> list[int]:
    """MMR on arrays: the positions (into ``scores``) of the ``k`` items picked, in slate order.

    ``similarity(order)``: the ``(n, n)`` similarity of the items in that order (called only
    when diversity counts); ``categories_at(position)``: an item's categories, asked only for
    items the greedy loop reaches when there are caps. Serving passes rows of its catalogue's
    precomputed bitsets and vectors (``serving.pipeline``), ``mmr_rerank`` those of its items.
    """
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_ must be in [0, 1], got {lambda_}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    n = int(scores.size)
    if n == 0 or k == 0:
        return []
    # Work in score order (stable), so that equal MMR values go to the more relevant item, then
    # to the earlier one; with lambda_ = 0 the first pick is still the best-scored item.
    order = np.argsort(-scores, kind="stable")
    capped = bool(category_caps) or default_cap is not None
    if capped and categories_at is None:
        raise ValueError("category caps need categories_of")
    diversity_weight = 1.0 - lambda_
    use_similarity = diversity_weight > 0 and similarity is not None
    if not use_similarity and not capped:
        # The greedy loop would take the items in exactly this order (the serving default,
        # lambda 1 without caps): skip the per-pick numpy work and the category lookups.
        return order[:k].tolist()
    # Taken (or cap-blocked) items get relevance -inf, so they can never win argmax again.
    relevance = lambda_ * normalise_relevance(scores[order], normalisation)
    matrix = similarity(order) if use_similarity and similarity is not None else None
    positions = order.tolist()
    max_similarity = np.zeros(n)
    per_category: dict[str, int] = {}
    chosen: list[int] = []
    while len(chosen) < k:
        objective = relevance - diversity_weight * max_similarity if use_similarity else relevance
        j = int(np.argmax(objective))  # first maximum: ties go to input order
        if relevance[j] == -np.inf:
            break  # nothing eligible left
        relevance[j] = -np.inf
        if capped and categories_at is not None:
            cats = tuple(categories_at(positions[j]))
            if any(per_category.get(c, 0) >= _cap(c, category_caps, default_cap) for c in cats):
                continue  # would exceed a cap; never eligible again in this slate
            for c in cats:
                per_category[c] = per_category.get(c, 0) + 1
        chosen.append(positions[j])
        if matrix is not None:
            np.maximum(max_similarity, matrix[j], out=max_similarity)
    return chosen


def _cap(category: str, caps: Mapping[str, int] | None, default: int | None) -> float:
    if caps is not None and category in caps:
        return caps[category]
    return default if default is not None else float("inf")


def _benchmark(repeats: int = 300, seed: int = 0) -> dict[str, float]:
    """Time ``k = 50`` from ``n = 200`` (20 categories, 64-d vectors); figures in microseconds."""
    import time

    rng = np.random.default_rng(seed)
    n, k = 200, 50
    names = [f"g{c}" for c in range(20)]
    items = [
        ScoredItem(f"i{n_}", float(s), "ann") for n_, s in enumerate(-np.sort(-rng.normal(size=n)))
    ]
    cats = {
        it.item_id: tuple(rng.choice(names, size=rng.integers(1, 4), replace=False)) for it in items
    }
    vecs = {it.item_id: rng.normal(size=64) for it in items}
    figures: dict[str, float] = {}
    for label, kwargs in {
        "categories": {"categories_of": cats.get},
        "vectors": {"vectors": vecs},
        "both": {"categories_of": cats.get, "vectors": vecs},
    }.items():
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            mmr_rerank(items, k, lambda_=0.7, **kwargs)  # type: ignore[arg-type]
            timings.append(time.perf_counter() - started)
        figures[f"mmr_{label}_p50_us"] = float(np.percentile(timings, 50) * 1e6)
        figures[f"mmr_{label}_p99_us"] = float(np.percentile(timings, 99) * 1e6)
    return figures


if __name__ == "__main__":  # python -m serving.rerank: a tiny timing, not a test
    for name, value in _benchmark().items():
        print(f"{name}: {value:.0f}")
