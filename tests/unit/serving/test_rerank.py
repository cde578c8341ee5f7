"""MMR diversity re-ranking: hand-worked cases and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.catalog import ItemCatalog, ItemMeta
from serving.rerank import (
    ScoredItem,
    categories_from_catalog,
    mmr_rerank,
    normalise_relevance,
    similarity_matrix,
)


def ids(items: list[ScoredItem]) -> list[str]:
    return [item.item_id for item in items]


ITEMS = [
    ScoredItem("drama1", 10.0, "ann"),
    ScoredItem("drama2", 9.5, "ann"),
    ScoredItem("drama3", 9.0, "ann"),
    ScoredItem("comedy1", 6.0, "popular"),
    ScoredItem("horror1", 0.0, "popular"),
]
CATEGORIES = {
    "drama1": ("Drama",),
    "drama2": ("Drama",),
    "drama3": ("Drama",),
    "comedy1": ("Comedy",),
    "horror1": ("Horror",),
}


def test_lambda_one_keeps_the_ranker_order():
    assert ids(mmr_rerank(ITEMS, 4, lambda_=1.0, categories_of=CATEGORIES.get)) == [
        "drama1",
        "drama2",
        "drama3",
        "comedy1",
    ]


def test_hand_worked_mmr_with_lambda_half():
    # minmax relevance: drama1 1.0, drama2 0.95, drama3 0.9, comedy1 0.6, horror1 0.0
    # pick 1: drama1 (0.5).  pick 2: drama2 0.475-0.5=-0.025, comedy1 0.3 → comedy1.
    # pick 3: drama2 -0.025, horror1 0.0 → horror1.  pick 4: drama2 (first of equal dramas).
    picked = mmr_rerank(ITEMS, 4, lambda_=0.5, categories_of=CATEGORIES.get)
    assert ids(picked) == ["drama1", "comedy1", "horror1", "drama2"]


def test_scores_and_sources_pass_through_unchanged():
    picked = mmr_rerank(ITEMS, 5, lambda_=0.3, categories_of=CATEGORIES.get)
    assert set(picked) == set(ITEMS)


def test_caps_limit_items_per_category_and_may_shorten_the_slate():
    picked = mmr_rerank(
        ITEMS, 5, lambda_=1.0, categories_of=CATEGORIES.get, category_caps={"Drama": 2}
    )
    assert ids(picked) == ["drama1", "drama2", "comedy1", "horror1"]
    only_drama = mmr_rerank(ITEMS[:3], 3, lambda_=1.0, categories_of=CATEGORIES.get, default_cap=1)
    assert ids(only_drama) == ["drama1"]


def test_caps_need_categories():
    with pytest.raises(ValueError, match="categories_of"):
        mmr_rerank(ITEMS, 3, default_cap=1)


def test_vector_similarity_pushes_near_duplicates_down():
    vectors = {
        "a": np.array([1.0, 0.0]),
        "a_copy": np.array([1.0, 0.01]),
        "b": np.array([0.0, 1.0]),
    }
    items = [
        ScoredItem("a", 3.0, "ann"),
        ScoredItem("a_copy", 2.9, "ann"),
        ScoredItem("b", 2.0, "ann"),
    ]
    assert ids(mmr_rerank(items, 2, lambda_=0.5, vectors=vectors)) == ["a", "b"]
    assert ids(mmr_rerank(items, 2, lambda_=1.0, vectors=vectors)) == ["a", "a_copy"]


def test_similarity_uses_the_measures_each_pair_has():
    vectors = {"x": np.array([1.0, 0.0]), "y": np.array([1.0, 0.0])}
    sim = similarity_matrix(["x", "y", "z"], [("A",), ("B",), ()], vectors)
    # x-y: jaccard 0 and cosine 1 → mean 0.5; z has neither → 0 with everyone.
    assert sim[0, 1] == pytest.approx(0.5)
    assert sim[2, 0] == 0.0 and sim[0, 2] == 0.0
    assert sim[0, 0] == pytest.approx(1.0)


def test_rank_normalisation_ignores_score_gaps():
    assert list(normalise_relevance([100.0, 1.0, 0.9, -5.0], "rank")) == [1.0, 0.75, 0.5, 0.25]
    assert list(normalise_relevance([2.0, 2.0])) == [1.0, 1.0]


def test_catalog_adapter_reads_categories_and_tolerates_unknown_items():
    catalog = ItemCatalog([ItemMeta("m1", categories=("Drama", "War"))])
    categories_of = categories_from_catalog(catalog)
    assert tuple(categories_of("m1")) == ("Drama", "War")
    assert tuple(categories_of("unknown")) == ()


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        mmr_rerank(ITEMS, 2, lambda_=1.5)
    with pytest.raises(ValueError):
        normalise_relevance([1.0, float("nan")])
    assert mmr_rerank([], 5) == [] and mmr_rerank(ITEMS, 0) == []


pools = st.integers(min_value=1, max_value=40).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-100, 100, allow_nan=False), min_size=n, max_size=n),
        st.lists(st.sets(st.sampled_from("ABCDE"), max_size=3), min_size=n, max_size=n),
    )
)


@settings(max_examples=60, deadline=None)
@given(
    pool=pools,
    k=st.integers(min_value=1, max_value=50),
    lam=st.floats(0.0, 1.0),
    how=st.sampled_from(["minmax", "rank"]),
)
def test_mmr_returns_distinct_input_items_and_is_deterministic(pool, k, lam, how):
    scores, categories = pool
    items = [ScoredItem(f"i{n}", s, "ann") for n, s in enumerate(scores)]
    table = {item.item_id: tuple(c) for item, c in zip(items, categories, strict=True)}
    first = mmr_rerank(items, k, lambda_=lam, categories_of=table.get, normalisation=how)
    assert len(first) == min(k, len(items))
    assert len(set(ids(first))) == len(first)
    assert set(first) <= set(items)
    assert first == mmr_rerank(items, k, lambda_=lam, categories_of=table.get, normalisation=how)
    # The first pick is always the most relevant item (earliest on ties).
    best = max(range(len(items)), key=lambda n: (items[n].score, -n))
    assert first[0] == items[best]


@settings(max_examples=40, deadline=None)
@given(pool=pools, cap=st.integers(min_value=1, max_value=3), lam=st.floats(0.0, 1.0))
def test_caps_are_never_exceeded(pool, cap, lam):
    scores, categories = pool
    items = [ScoredItem(f"i{n}", s, "ann") for n, s in enumerate(scores)]
    table = {item.item_id: tuple(c) for item, c in zip(items, categories, strict=True)}
    picked = mmr_rerank(items, 20, lambda_=lam, categories_of=table.get, default_cap=cap)
    for category in "ABCDE":
        assert sum(category in table[item.item_id] for item in picked) <= cap


def test_the_docstring_examples_run():
    import doctest

    import serving.rerank

    result = doctest.testmod(serving.rerank)
    assert result.attempted > 0 and result.failed == 0


@settings(max_examples=40, deadline=None)
@given(
    categories=st.lists(
        st.sets(st.integers(0, 149).map(lambda c: f"c{c}"), max_size=6), min_size=1, max_size=15
    )
)
def test_category_similarity_is_jaccard_even_past_64_categories(categories):
    sim = similarity_matrix([f"i{n}" for n in range(len(categories))], categories, None)
    for x, left in enumerate(categories):
        for y, right in enumerate(categories):
            union = left | right
            expected = len(left & right) / len(union) if union else 0.0
            assert sim[x, y] == pytest.approx(expected, abs=1e-6)


def test_both_measures_average_when_every_item_has_both():
    vectors = {"x": np.array([1.0, 0.0]), "y": np.array([0.0, 1.0])}
    sim = similarity_matrix(["x", "y"], [("A", "B"), ("B",)], vectors)
    assert sim[0, 1] == pytest.approx((0.5 + 0.0) / 2)
    assert sim[1, 1] == pytest.approx(1.0)
