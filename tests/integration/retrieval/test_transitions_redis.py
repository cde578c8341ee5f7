"""The transition store contract, run against the in-memory store and real Redis."""

import uuid

import pytest
import redis

from features.transition_store import InMemoryTransitionStore, RedisTransitionStore
from retrieval.cooccurrence import CooccurrenceSource
from retrieval.sources import RetrievalRequest
from streams.transitions import increments_from_sequence, transition_increments

pytestmark = pytest.mark.integration


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        yield InMemoryTransitionStore()
        return
    client = redis.Redis(host="127.0.0.1", port=6379)
    client.ping()  # a missing Redis is a failure, never a skip
    prefix = f"test_{uuid.uuid4().hex[:10]}:retrieval"
    redis_store = RedisTransitionStore(client, prefix, max_neighbours=3)
    try:
        yield redis_store
    finally:
        keys = list(redis_store.owned_keys())
        if keys:
            client.delete(*keys)
        assert not list(redis_store.owned_keys())
        client.close()


def test_neighbours_are_transition_probabilities(store) -> None:
    store.apply(increments_from_sequence(["a", "b", "c"], window=1))
    store.apply(increments_from_sequence(["a", "b", "d"], window=1))
    found = store.neighbours(["a", "b", "unknown"], 5)
    assert found["a"] == [("b", 1.0)]
    assert found["b"] == [("c", 0.5), ("d", 0.5)]
    assert found["unknown"] == []


def test_streamed_updates_equal_a_batch_build(store) -> None:
    sequence = ["a", "b", "a", "c", "b"]
    for position in range(1, len(sequence)):
        store.apply(transition_increments(sequence[:position], sequence[position], window=2))
    batch = InMemoryTransitionStore()
    batch.apply(increments_from_sequence(sequence, window=2))
    for anchor in "abc":
        got = dict(store.neighbours([anchor], 5)[anchor])
        want = dict(batch.neighbours([anchor], 5)[anchor])
        assert got.keys() == want.keys()
        assert all(abs(got[i] - want[i]) < 1e-9 for i in got)


def test_source_reads_the_store(store) -> None:
    store.apply(increments_from_sequence(["x", "y", "z"], window=1))
    found = CooccurrenceSource(store, anchors=2).candidates(
        RetrievalRequest(k=3, history=("x", "y"))
    )
    assert [c.item_id for c in found] == ["z", "y"]


def test_redis_keeps_only_the_top_neighbours() -> None:
    client = redis.Redis(host="127.0.0.1", port=6379)
    prefix = f"test_{uuid.uuid4().hex[:10]}:retrieval"
    store = RedisTransitionStore(client, prefix, max_neighbours=2)
    try:
        store.apply({("a", "b"): 3.0, ("a", "c"): 2.0, ("a", "d"): 1.0})
        assert [i for i, _ in store.neighbours(["a"], 10)["a"]] == ["b", "c"]
        assert all(key.startswith(prefix) for key in store.owned_keys())
    finally:
        keys = list(store.owned_keys())
        if keys:
            client.delete(*keys)
        client.close()


def test_retracted_transitions_leave_no_neighbour(store) -> None:
    store.apply({("a", "b"): 1.0, ("a", "c"): 0.5})
    store.apply({("a", "c"): -0.5, ("a", "d"): 0.0})  # retracted; added and retracted in a batch
    assert store.neighbours(["a"], 5) == {"a": [("b", 1.0)]}
    store.apply({("a", "b"): -1.0})
    assert store.neighbours(["a"], 5) == {"a": []}


def test_the_serving_rows_equal_the_source_candidates(store) -> None:
    """``neighbour_arrays`` (Redis bytes parsed by numpy) gives the co-occurrence source the
    same candidates, scores and order on catalogue rows as ``neighbours`` gives it on objects."""
    import numpy as np

    from retrieval.catalog import ItemCatalog, ItemMeta
    from retrieval.catalog_index import CatalogIndex

    rng = np.random.default_rng(5)
    items = [f"m{n}" for n in range(30)]
    for _ in range(60):  # integer counts: equal probabilities, so ties by item id decide
        store.apply(increments_from_sequence(list(rng.choice(items, size=6)), window=2))
    catalog = ItemCatalog(ItemMeta(i, available=n % 4 != 0) for n, i in enumerate(items[:26]))
    source = CooccurrenceSource(store, catalog=catalog, per_anchor=3)
    index = CatalogIndex(catalog)
    compared = 0
    for _ in range(40):
        request = RetrievalRequest(k=int(rng.integers(1, 12)), history=tuple(rng.choice(items, 8)))
        expected = [(c.item_id) for c in source.candidates(request)]
        rows = source.ranked_indices(request, index.eligible(request))
        assert index.item_ids(rows) == expected
        compared += bool(expected)
    assert compared > 20
