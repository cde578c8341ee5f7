"""Transition stores (``features.transition_store``): order-insensitive counts, neighbour order,
the raw Redis reply parser, and one key layout for the writer and the readers."""

from hypothesis import given
from hypothesis import strategies as st

from core.settings import Settings
from features.transition_store import (
    InMemoryTransitionStore,
    by_weight_then_id,
    parse_neighbours,
    redis_transition_store,
    top_neighbours,
)
from retrieval.build_retriever import transition_store
from retrieval.sources import best_first
from streams.transitions import increments_from_sequence

items = st.sampled_from([f"i{n}" for n in range(6)])
sequences = st.lists(items, max_size=12)


def _close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-9 for k in a)


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


def test_top_neighbours_are_probabilities_with_id_tie_break() -> None:
    assert top_neighbours({"b": 1.0, "a": 1.0, "c": 2.0}, 4.0, 2) == [("c", 0.5), ("a", 0.25)]
    assert top_neighbours({}, 0.0, 3) == []


@given(st.dictionaries(st.text(max_size=3), st.sampled_from([0.5, 1.0, 2.0, 1 / 3])))
def test_neighbour_order_is_the_candidate_order(weights) -> None:
    assert by_weight_then_id(weights.items()) == best_first(weights.items())


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
    assert parse_neighbours(resp2, total) == expected
    assert parse_neighbours(resp3, total) == expected
    assert parse_neighbours([], total) == []


def test_the_worker_and_serving_use_one_key_layout() -> None:
    settings = Settings(namespace="unit")
    written = redis_transition_store(None, settings.namespace)
    read = transition_store(settings.deployment, None)
    assert (read.prefix, read.max_neighbours) == (written.prefix, written.max_neighbours)
    assert written.totals_key == "unit:{unit}:retrieval:i2i_total"
