"""One Milvus search for several queries (``IndexSearch.search_group``, nq = the batch) gives
each query the answer of its own search, on real Milvus Lite: exclusions over-fetched and removed
here instead of pushed, filters shared, k per query."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.index import IndexConfig, ItemIndex, ItemRows
from retrieval.index_search import SearchGroup, SearchQuery
from retrieval.sources import CandidateFilters

pytestmark = pytest.mark.integration

DIM = 8
N = 300


@pytest.fixture
def index(milvus_uri, alias_prefix):
    rng = np.random.default_rng(11)
    rows = ItemRows(
        item_ids=[f"i{j}" for j in range(N)],
        vectors=rng.standard_normal((N, DIM)).astype(np.float32),
        categories=[("Drama",) if j % 2 else ("Comedy", "Action") for j in range(N)],
        available=[j % 5 != 0 for j in range(N)],
        created_time_ms=list(range(N)),
    )
    with ItemIndex(milvus_uri, alias=f"{alias_prefix}_items", config=IndexConfig()) as ix:
        ix.publish(rows, progress=False)
        assert ix.index_type_of(ix.active_collection) == "FLAT"  # the premise: exact search
        yield ix


def random_queries(seed: int, n: int) -> list[SearchQuery]:
    """Queries with different k and exclusions: none, a few, many (past the hits a plain
    search returns), ids Milvus has never seen, one an expression cannot carry."""
    rng = np.random.default_rng(seed)
    queries = []
    for q in range(n):
        excluded = {f"i{j}" for j in rng.choice(N, size=[0, 3, 40, 150][q % 4], replace=False)}
        if q % 3 == 0:
            excluded |= {"never-indexed", "tab\tid"}
        queries.append(
            SearchQuery(
                rng.standard_normal(DIM).astype(np.float32),
                int(rng.integers(1, 60)),
                frozenset(excluded),
            )
        )
    return queries


@pytest.mark.parametrize(
    "filters",
    [
        CandidateFilters(available_only=False),
        CandidateFilters(),
        CandidateFilters(categories=frozenset({"Action"})),
    ],
    ids=["none", "available", "category"],
)
def test_one_search_for_many_queries_answers_each_as_its_own_search(index, filters) -> None:
    queries = random_queries(seed=len(filters.categories), n=12)
    collection = index.active_collection
    alone = [
        index.search_in(collection, q.vector[None], q.k, filters=filters, excluded=q.excluded)[0]
        for q in queries
    ]
    for group_collection in (collection, None):  # pinned, and through the alias
        together = index.search_group(SearchGroup(group_collection, filters, DIM), queries)
        assert len(together) == len(queries)
        for query, got, expected in zip(queries, together, alone, strict=True):
            assert [i for i, _ in got] == [i for i, _ in expected]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5)
            assert len(got) == query.k and not {i for i, _ in got} & query.excluded


def test_batch_searches_routes_one_vector_searches_of_an_exact_collection(index) -> None:
    """With a submit installed, a one-vector search goes to it (group: collection, filters,
    dimension) and returns its answer; searches of several vectors still go to Milvus
    directly; ``None`` switches the routing off."""
    submitted: list[tuple[SearchGroup, SearchQuery]] = []

    def submit(group: SearchGroup, query: SearchQuery) -> list[tuple[str, float]]:
        submitted.append((group, query))
        return index.search_group(group, [query])[0]

    query = random_queries(seed=5, n=1)[0]
    collection = index.active_collection
    available = CandidateFilters()
    expected = index.search_in(
        collection, query.vector[None], query.k, filters=available, excluded=query.excluded
    )
    index.batch_searches(submit)
    try:
        got = index.pinned(collection).search(
            query.vector[None], query.k, filters=available, excluded=query.excluded
        )
        assert got == expected
        group, routed = submitted[0]
        assert group == SearchGroup(collection, available, DIM)
        assert routed.k == query.k and routed.excluded == query.excluded
        two = np.stack([query.vector, -query.vector])
        assert len(index.search(two, 5)) == 2 and len(submitted) == 1  # not routed
    finally:
        index.batch_searches(None)
    index.search(query.vector[None], 5)
    assert len(submitted) == 1
