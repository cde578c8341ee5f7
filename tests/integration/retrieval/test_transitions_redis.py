"""The transition store contract, run against the in-memory store and real Redis."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from batched_reads import read_concurrently

from features.transition_store import InMemoryTransitionStore, RedisTransitionStore
from retrieval.cooccurrence import CooccurrenceSource
from retrieval.sources import RetrievalRequest
from streams.transitions import increments_from_sequence, transition_increments

pytestmark = pytest.mark.integration


@contextmanager
def _store(kind: str) -> Iterator[InMemoryTransitionStore | RedisTransitionStore]:
    if kind == "memory":
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


@pytest.fixture(params=["memory", "redis"])
def store(request):
    with _store(request.param) as made:
        yield made


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
    """``changed_neighbours`` (Redis bytes parsed by numpy, kept under their stamps between
    requests) gives the co-occurrence source the same candidates, scores and order on catalogue
    rows as ``neighbours`` gives it on objects, while writes go on between the requests."""
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
    for round_ in range(40):
        if round_ % 5 == 4:  # a write between requests: its anchors must be read again
            store.apply(increments_from_sequence(list(rng.choice(items, size=4)), window=2))
        request = RetrievalRequest(k=int(rng.integers(1, 12)), history=tuple(rng.choice(items, 8)))
        expected = [(c.item_id) for c in source.candidates(request)]
        rows = source.ranked_indices(request, index.eligible(request))
        assert index.item_ids(rows) == expected
        compared += bool(expected)
    assert compared > 20


@pytest.fixture(params=["memory", "redis", "cluster"])
def stamped_store(request):
    """The stores again, and the namespace's store on a Redis Cluster (the read is a script:
    its keys share the stream's slot)."""
    yield from _stamped_store(request)


@pytest.fixture(params=["redis", "cluster"])
def redis_store(request):
    """The Redis stores of ``stamped_store`` (batched reads are Redis's)."""
    yield from _stamped_store(request)


def _stamped_store(request):
    if request.param != "cluster":
        with _store(request.param) as made:
            yield made
        return
    from core.settings import RedisSettings
    from features.redis_client import redis_client
    from features.transition_store import redis_transition_store

    url = request.getfixturevalue("redis_cluster_url")
    client = redis_client(RedisSettings(url=url, cluster=True))
    cluster_store = redis_transition_store(client, f"tr{uuid.uuid4().hex[:8]}")
    try:
        yield cluster_store
    finally:
        for key in list(cluster_store.owned_keys()):
            client.delete(key)
        client.close()


def test_changed_neighbours_answer_only_what_changed_since_the_stamp_held(stamped_store) -> None:
    store = stamped_store
    store.apply({("a", "b"): 2.0, ("a", "c"): 1.0, ("x", "y"): 1.0})
    first = store.changed_neighbours(["a", "x", "none"], 5, [None, None, None])
    assert first[2].stamp is None and list(first[2].arrays[0]) == []  # never written: no stamp
    ids, probabilities = first[0].arrays
    assert dict(zip([_text(i) for i in ids], probabilities.tolist(), strict=True)) == {
        "b": 2 / 3,
        "c": 1 / 3,
    }
    stamps = [answer.stamp for answer in first]
    same = store.changed_neighbours(["a", "x"], 5, stamps[:2])
    assert [answer.arrays for answer in same] == [None, None]  # nothing to parse
    assert [answer.stamp for answer in same] == stamps[:2]

    store.apply({("a", "c"): -1.0})  # a retraction changes "a" alone
    after = store.changed_neighbours(["a", "x"], 5, stamps[:2])
    assert after[0].stamp != stamps[0] and after[1] == same[1]
    assert [_text(i) for i in after[0].arrays[0]] == ["b"]
    assert after[0].arrays[1].tolist() == [1.0]


def test_a_batch_of_reads_answers_each_read_as_alone(redis_store) -> None:
    store = redis_store
    store.apply({("a", "b"): 2.0, ("a", "c"): 1.0, ("x", "y"): 1.0, ("z", "a"): 3.0})
    first = store.changed_neighbours(["a", "x", "z"], 5, [None] * 3)
    stamp_a, stamp_x, stamp_z = (answer.stamp for answer in first)
    reads = [
        (("a", "x"), (None, None)),
        (("z", "none", "a"), (stamp_z, None, stamp_a)),  # held: the stamp alone comes back
        (("x", "a"), (b"an older stamp", stamp_a)),
        (("a",), (None,)),  # an anchor read twice in one batch
    ]
    alone = [_plain(store.changed_neighbours(list(a), 5, list(h))) for a, h in reads]
    assert alone[1][0] == (stamp_z, None) and alone[2][0] == (stamp_x, (["y"], [1.0]))
    assert [_plain(answer) for answer in store.read_batch(5, reads)] == alone

    # Through serving's batcher: concurrent reads share one call and get their own answers.
    got, calls = read_concurrently(
        "cooccurrence",
        store.read_batch,
        store.batch_reads,
        lambda anchors, held: _plain(store.changed_neighbours(list(anchors), 5, list(held))),
        reads,
    )
    assert got == alone
    assert max(calls) >= 2, calls  # reads did share a call


def _plain(answers) -> list:
    """``StampedNeighbours`` without arrays: (stamp, None | (ids, probabilities))."""
    return [
        (
            a.stamp,
            None if a.arrays is None else ([_text(i) for i in a.arrays[0]], a.arrays[1].tolist()),
        )
        for a in answers
    ]


def _text(item) -> str:
    return item.decode() if isinstance(item, bytes) else item
