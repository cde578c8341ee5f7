"""ItemIndex against real Milvus: versions, alias switch under load, GC, filters, errors.

Every test taking ``milvus_backend_uri`` runs against Milvus Lite and an embedded Milvus server
(``conftest.py``): the same contract on both backends.
"""

import threading

import numpy as np
import pytest

from core.errors import DependencyUnavailable, NotFoundError
from retrieval.index import IndexConfig, ItemIndex, ItemRows
from retrieval.sources import CandidateFilters

pytestmark = pytest.mark.integration

DIM = 8


def _rows(n: int, seed: int, prefix: str = "i") -> ItemRows:
    rng = np.random.default_rng(seed)
    return ItemRows(
        item_ids=[f"{prefix}{j}" for j in range(n)],
        vectors=rng.standard_normal((n, DIM)).astype(np.float32),
        categories=[("Drama",) if j % 2 else ("Comedy", "Action") for j in range(n)],
        available=[j % 5 != 0 for j in range(n)],
        created_time_ms=list(range(n)),
    )


@pytest.fixture
def index(milvus_backend_uri, alias_prefix):
    with ItemIndex(
        milvus_backend_uri, alias=f"{alias_prefix}_items", config=IndexConfig(keep_versions=2)
    ) as ix:
        yield ix


def test_search_before_any_version_is_a_not_found_error(index) -> None:
    with pytest.raises(NotFoundError):
        index.search(np.zeros((1, DIM), dtype=np.float32), 5)


def test_publish_builds_loads_and_switches(index) -> None:
    rows = _rows(300, seed=1)
    version = index.publish(rows, progress=False)
    assert index.active_version == version == 1
    assert index.active_collection == f"{index.alias}_v1"
    assert index.count() == 300
    hits = index.search(rows.vectors[3:4], 10, filters=CandidateFilters(available_only=False))[0]
    scores = rows.vectors @ rows.vectors[3]
    exact = {f"i{j}" for j in np.argsort(-scores)[:10]}
    assert len({item for item, _ in hits} & exact) >= 9  # IVF may miss at most one here


def test_filters_and_exclusions_are_pushed_into_milvus(index) -> None:
    rows = _rows(200, seed=2)
    index.publish(rows, progress=False)
    excluded = frozenset({"i1", "i3", 'we"ird'})
    hits = index.search(
        rows.vectors[1:2],
        50,
        filters=CandidateFilters(categories=frozenset({"Drama"}), available_only=True),
        excluded=excluded,
    )[0]
    ids = [int(item[1:]) for item, _ in hits]
    assert hits and all(j % 2 == 1 and j % 5 != 0 for j in ids)
    assert not {item for item, _ in hits} & excluded


def test_ids_with_quotes_and_newlines_are_excluded_exactly(index) -> None:
    odd = ['a"b', "c'd", "e\\f", "n\nl", "plain"]
    rows = ItemRows(odd, np.ones((len(odd), DIM), dtype=np.float32))
    index.publish(rows, progress=False)
    for item in odd:
        hits = index.search(np.ones((1, DIM), dtype=np.float32), 10, excluded=frozenset({item}))[0]
        assert {h for h, _ in hits} == set(odd) - {item}


def test_alias_swap_under_concurrent_queries_never_fails(index) -> None:
    first, second = _rows(400, seed=3, prefix="old"), _rows(400, seed=4, prefix="new")
    index.publish(first, progress=False)
    query = first.vectors[:1]
    errors: list[Exception] = []
    answers: list[str] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            try:
                hits = index.search(query, 5, filters=CandidateFilters(available_only=False))[0]
                answers.append(hits[0][0][:3] if hits else "empty")
            except Exception as exc:  # any failure during the swap is a bug
                errors.append(exc)

    worker = threading.Thread(target=ask)
    worker.start()
    try:
        version = index.build_version(second, progress=False)
        index.activate(version)
        index.garbage_collect(keep=1)  # drops the version the thread was querying a moment ago
        while "new" not in answers[-3:]:
            pass  # busy-wait on the other thread's progress, not the clock
    finally:
        stop.set()
        worker.join()
    assert errors == []
    assert "old" in answers and "empty" not in answers and answers[-1] == "new"
    assert index.versions() == [version]


def test_garbage_collection_keeps_the_newest_and_never_the_active(index) -> None:
    for seed in range(4):
        index.publish(_rows(50, seed), progress=False)
    assert index.versions() == [3, 4]  # keep_versions=2
    index.activate(3)  # roll back
    assert index.garbage_collect(keep=0) == [4]
    assert index.versions() == [3] and index.active_version == 3


def test_a_second_client_follows_the_switch(index) -> None:
    index.publish(_rows(50, 0), progress=False)
    with ItemIndex(index.uri, alias=index.alias) as other:  # e.g. the serving process
        assert other.active_collection == f"{index.alias}_v1"
        index.publish(_rows(50, 1), progress=False)
        index.garbage_collect(keep=1)  # v1, which `other` still points at, is dropped
        hits = other.search(np.ones((1, DIM), dtype=np.float32), 3)[0]
        assert len(hits) == 3  # it re-read the alias and retried instead of failing
        assert other.active_collection == f"{index.alias}_v2"


def test_activating_a_missing_version_is_not_found(index) -> None:
    with pytest.raises(NotFoundError):
        index.activate(42)


def test_unreachable_server_is_dependency_unavailable() -> None:
    with pytest.raises(DependencyUnavailable):
        ItemIndex("http://127.0.0.1:9", alias="x_items", config=IndexConfig(timeout_s=2.0))


def test_ivf_flat_collections_are_searched_with_nprobe(milvus_backend_uri, alias_prefix) -> None:
    config = IndexConfig(index_type="IVF_FLAT", nlist=16, nprobe=16)
    alias = f"{alias_prefix}_items"
    with ItemIndex(milvus_backend_uri, alias=alias, config=config) as index:
        rows = _rows(500, seed=5)
        index.publish(rows, progress=False)
        assert index.index_type_of(index.active_collection) == "IVF_FLAT"
        hits = index.search(rows.vectors[:1], 10, filters=CandidateFilters(available_only=False))[0]
        exact = {f"i{j}" for j in np.argsort(-(rows.vectors @ rows.vectors[0]))[:10]}
        assert len({item for item, _ in hits} & exact) >= 9


def test_the_native_alias_is_mirrored_on_a_server_and_the_registry_rules_on_both(
    index, milvus_backend_uri
) -> None:
    """The one deliberate backend difference: Milvus Lite has no native aliases (UNIMPLEMENTED),
    so only the registry row points at the active version there; a server gets both."""
    from pymilvus import MilvusClient

    from retrieval.milvus_lite import is_milvus_lite_uri

    index.publish(_rows(50, 0), progress=False)
    index.publish(_rows(50, 1), progress=False)
    assert index.refresh() == f"{index.alias}_v2"  # the registry, on either backend
    if is_milvus_lite_uri(milvus_backend_uri):
        assert index._native_alias is False
        return
    client = MilvusClient(uri=milvus_backend_uri)
    try:
        assert client.describe_alias(index.alias)["collection_name"] == f"{index.alias}_v2"
    finally:
        client.close()


def test_hnsw_collections_are_searched_with_ef_at_least_k(milvus_backend_uri, alias_prefix) -> None:
    """HNSW exists on a Milvus server only; Milvus Lite refuses to build it (a clear error)."""
    from retrieval.milvus_lite import is_milvus_lite_uri

    config = IndexConfig(index_type="HNSW", hnsw_ef=16)
    alias = f"{alias_prefix}_items"
    with ItemIndex(milvus_backend_uri, alias=alias, config=config) as index:
        rows = _rows(600, seed=6)
        if is_milvus_lite_uri(milvus_backend_uri):
            with pytest.raises(DependencyUnavailable):
                index.build_version(rows, progress=False)
            return
        index.publish(rows, progress=False)
        assert index.index_type_of(index.active_collection) == "HNSW"
        # k=100 > hnsw_ef: Milvus rejects ef < limit, so the search must raise ef to the limit.
        everything = CandidateFilters(available_only=False)
        hits = index.search(rows.vectors[:1], 100, filters=everything)[0]
        exact = {f"i{j}" for j in np.argsort(-(rows.vectors @ rows.vectors[0]))[:100]}
        assert len(hits) == 100 and len({item for item, _ in hits} & exact) >= 95
