"""``search_arrays`` answers what ``MilvusClient.search`` answers, on real Milvus Lite: the same
ids in the same order and the same scores, for several queries at once, with and without a
filter, and a filter nothing passes. It reaches into pymilvus internals (the module's docstring),
so this is the test a pymilvus upgrade must pass."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.index import IndexConfig, ItemIndex, ItemRows
from retrieval.milvus_search import search_arrays

pytestmark = pytest.mark.integration

DIM = 8
N = 120


@pytest.fixture
def index(milvus_uri, alias_prefix):
    rng = np.random.default_rng(5)
    rows = ItemRows(
        item_ids=[f"i{j}" for j in range(N)],
        vectors=rng.standard_normal((N, DIM)).astype(np.float32),
        categories=[("Drama",) if j % 2 else ("Comedy",) for j in range(N)],
        available=[j % 4 != 0 for j in range(N)],
        created_time_ms=list(range(N)),
    )
    with ItemIndex(milvus_uri, alias=f"{alias_prefix}_items", config=IndexConfig()) as ix:
        ix.publish(rows, progress=False)
        yield ix


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "available == true",
        'array_contains_any(categories, ["Drama"]) and item_id not in ["i1", "i3"]',
        'item_id in ["nothing"]',
    ],
)
def test_search_arrays_equals_milvus_client_search(index, expression) -> None:
    queries = np.random.default_rng(9).standard_normal((3, DIM)).astype(np.float32)
    collection = index.active_collection
    params = {"metric_type": "IP"}
    expected = index.client.search(
        collection,
        data=queries.tolist(),
        limit=25,
        filter=expression,
        anns_field="embedding",
        search_params=params,
    )
    got = search_arrays(
        index.client,
        collection,
        queries,
        limit=25,
        expression=expression,
        search_params=params,
        timeout=10,
    )
    assert len(got) == len(expected) == 3
    for mine, theirs in zip(got, expected, strict=True):
        assert [i for i, _ in mine] == [hit["id"] for hit in theirs]
        assert [s for _, s in mine] == [hit["distance"] for hit in theirs]
    if expression == 'item_id in ["nothing"]':
        assert all(len(h) == 0 for h in got)
    else:
        assert all(len(h) == 25 for h in got)
