"""Decayed popularity (event-time order invariance) and the popular/fresh sources."""

from hypothesis import given
from hypothesis import strategies as st

from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.popular import (
    FreshSource,
    PopularityTracker,
    PopularSource,
    decay_add,
    decayed_value,
)
from retrieval.sources import CandidateFilters, Exclusions, RetrievalRequest, best_first

events = st.lists(st.tuples(st.integers(0, 10**7), st.floats(0.1, 5.0)), min_size=1, max_size=20)


@given(events, st.randoms())
def test_decayed_count_does_not_depend_on_arrival_order(batch, rnd) -> None:
    half_life = 1e6
    shuffled = batch[:]
    rnd.shuffle(shuffled)
    first = second = None
    for t, w in batch:
        first = decay_add(first, t, w, half_life)
    for t, w in shuffled:
        second = decay_add(second, t, w, half_life)
    at = 10**7
    a, b = decayed_value(first, at, half_life), decayed_value(second, at, half_life)
    assert abs(a - b) <= 1e-9 * max(1.0, abs(a))
    expected = sum(w * 2 ** (-(at - t) / half_life) for t, w in batch)
    assert abs(a - expected) <= 1e-9 * max(1.0, expected)


def test_recent_interactions_outrank_old_ones() -> None:
    tracker = PopularityTracker(half_life_ms=1000)
    tracker.observe_many([("old", 0), ("old", 0), ("old", 0), ("new", 5000)])
    scores = tracker.scores_at(5000)
    assert scores["new"] > scores["old"]


def _catalog() -> ItemCatalog:
    return ItemCatalog(
        [
            ItemMeta("a", categories=("Drama",), created_time_ms=100),
            ItemMeta("b", categories=("Comedy",), created_time_ms=300),
            ItemMeta("c", categories=("Drama",), created_time_ms=500, available=False),
            ItemMeta("d", categories=("Drama",), created_time_ms=900),
        ]
    )


def test_popular_ranks_by_score_then_appends_the_rest_of_the_catalog() -> None:
    source = PopularSource({"b": 2.0, "a": 5.0}, _catalog())
    found = source.candidates(RetrievalRequest(k=10))
    assert [c.item_id for c in found] == ["a", "b", "d"]  # c is unavailable
    drama = source.candidates(
        RetrievalRequest(k=10, filters=CandidateFilters(categories=frozenset({"Drama"})))
    )
    assert [c.item_id for c in drama] == ["a", "d"]


def test_popular_skips_exclusions() -> None:
    source = PopularSource({"b": 2.0, "a": 5.0}, _catalog())
    found = source.candidates(RetrievalRequest(k=1, exclusions=Exclusions(seen=frozenset({"a"}))))
    assert [c.item_id for c in found] == ["b"]


def test_fresh_returns_recent_items_newest_first_as_of_the_request() -> None:
    source = FreshSource(_catalog(), window_ms=400)
    assert [c.item_id for c in source.candidates(RetrievalRequest(k=5, as_of_ms=600))] == ["b"]
    unfiltered = RetrievalRequest(k=5, as_of_ms=600, filters=CandidateFilters(available_only=False))
    assert [c.item_id for c in source.candidates(unfiltered)] == ["c", "b"]
    # Without a request time, the newest catalogue time is the reference (no wall clock).
    assert [c.item_id for c in source.candidates(RetrievalRequest(k=5))] == ["d"]


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=4), st.sampled_from([0.0, 0.5, 1.0, 2.5]), max_size=30
    )
)
def test_best_first_orders_by_score_descending_then_id(scores: dict[str, float]) -> None:
    assert best_first(scores.items()) == sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
