"""Item-to-item transitions: pure increments (property-tested) and the in-memory store/source."""

from hypothesis import given
from hypothesis import strategies as st

from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.cooccurrence import (
    CooccurrenceSource,
    InMemoryTransitionStore,
    _probabilities,
    increments_from_sequence,
    merge_increments,
    top_neighbours,
    transition_increments,
)
from retrieval.sources import CandidateFilters, Exclusions, RetrievalRequest

items = st.sampled_from([f"i{n}" for n in range(6)])
sequences = st.lists(items, max_size=12)


def _close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-9 for k in a)


def test_increments_weight_by_distance_and_skip_self() -> None:
    assert transition_increments(["a", "b", "c"], "c", window=3) == {
        ("b", "c"): 0.5,
        ("a", "c"): 1 / 3,
    }
    assert transition_increments(["a", "b"], "d", window=1) == {("b", "d"): 1.0}
    assert transition_increments([], "a") == {}


@given(st.lists(sequences, max_size=5), st.randoms())
def test_store_state_does_not_depend_on_the_order_increments_arrive(users, rnd) -> None:
    parts = [increments_from_sequence(seq) for seq in users]
    shuffled = parts[:]
    rnd.shuffle(shuffled)
    first, second = InMemoryTransitionStore(), InMemoryTransitionStore()
    for part in parts:
        first.apply(part)
    for part in shuffled:
        second.apply(part)
    for anchor in [f"i{n}" for n in range(6)]:
        got_first = dict(first.neighbours([anchor], 10)[anchor])
        got_second = dict(second.neighbours([anchor], 10)[anchor])
        assert _close(got_first, got_second)


@given(
    st.lists(st.dictionaries(st.tuples(items, items), st.floats(0, 10)), max_size=4), st.randoms()
)
def test_merge_increments_is_commutative(parts, rnd) -> None:
    shuffled = parts[:]
    rnd.shuffle(shuffled)
    assert _close(merge_increments(*parts), merge_increments(*shuffled))


@given(sequences)
def test_streaming_event_by_event_equals_the_batch_computation(sequence) -> None:
    streamed = merge_increments(
        *(transition_increments(sequence[:i], sequence[i]) for i in range(1, len(sequence)))
    )
    assert _close(streamed, increments_from_sequence(sequence))


def test_top_neighbours_are_probabilities_with_id_tie_break() -> None:
    assert top_neighbours({"b": 1.0, "a": 1.0, "c": 2.0}, 4.0, 2) == [("c", 0.5), ("a", 0.25)]
    assert top_neighbours({}, 0.0, 3) == []


def _store() -> InMemoryTransitionStore:
    store = InMemoryTransitionStore()
    store.apply(increments_from_sequence(["a", "b", "c", "d"], window=1))
    store.apply(increments_from_sequence(["a", "b", "e"], window=1))
    return store


def test_source_proposes_successors_of_recent_items_and_respects_exclusions() -> None:
    source = CooccurrenceSource(_store(), anchors=1)
    found = source.candidates(RetrievalRequest(k=5, history=("x", "b")))
    assert [c.item_id for c in found] == ["c", "e"]
    assert all(c.source == "cooccurrence" for c in found)
    excluded = source.candidates(
        RetrievalRequest(k=5, history=("b",), exclusions=Exclusions(dismissed=frozenset({"c"})))
    )
    assert [c.item_id for c in excluded] == ["e"]


def test_source_applies_catalog_filters_and_handles_empty_history() -> None:
    catalog = ItemCatalog([ItemMeta("c", categories=("Drama",)), ItemMeta("e", available=False)])
    source = CooccurrenceSource(_store(), anchors=1, catalog=catalog)
    found = source.candidates(RetrievalRequest(k=5, history=("b",), filters=CandidateFilters()))
    assert [c.item_id for c in found] == ["c"]
    assert source.candidates(RetrievalRequest(k=5)) == []


@given(
    st.dictionaries(
        st.sampled_from([f"i{n}" for n in range(12)]), st.sampled_from([0.5, 1.0, 2.0, 1 / 3])
    )
)
def test_raw_redis_replies_parse_to_top_neighbours_order(weights) -> None:
    """The Redis store parses ``ZREVRANGE … WITHSCORES`` itself (RESP2 flat or RESP3 pairs);
    whatever order Redis breaks ties in, the result is ``top_neighbours``'."""
    total = sum(weights.values()) + 1.0
    expected = top_neighbours(weights, total, len(weights))
    # Redis order: score descending, ties by member descending
    redis_order = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]), reverse=False)[::-1]
    redis_order.sort(key=lambda kv: -kv[1])
    resp2 = [x for item, w in redis_order for x in (item.encode(), repr(w).encode())]
    resp3 = [[item.encode(), w] for item, w in redis_order]
    assert _probabilities(resp2, total) == expected
    assert _probabilities(resp3, total) == expected
    assert _probabilities([], total) == []
