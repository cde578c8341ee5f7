"""``search_request`` (a template per search shape, the vectors and consistency set per call)
builds the request pymilvus' ``Prepare.search_requests_with_expr`` builds, field for field."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retrieval.milvus_search import search_request


@pytest.mark.parametrize(
    ("params", "limit", "expression", "nq", "dim"),
    [
        ({"metric_type": "IP"}, 400, "", 1, 64),
        ({"metric_type": "IP"}, 200, "available == true", 3, 8),
        ({"metric_type": "IP", "params": {"nprobe": 16}}, 10, 'item_id not in ["a"]', 1, 4),
        ({"metric_type": "IP", "params": {"ef": 256}}, 256, "", 2, 16),
        ({"params": {"nprobe": 8}, "metric_type": "IP"}, 50, "", 1, 4),  # keys out of order
    ],
)
@pytest.mark.parametrize(
    "consistency",
    [
        {"use_default": True, "guarantee_timestamp": 1},
        {"use_default": True, "guarantee_timestamp": 449_000_000_000_000_001},
        {"use_default": False, "guarantee_timestamp": 0, "consistency_level": 0},
        {"use_default": False, "guarantee_timestamp": 7, "consistency_level": 2},
    ],
)
def test_the_request_is_pymilvus_own(params, limit, expression, nq, dim, consistency) -> None:
    from pymilvus.client.prepare import Prepare

    rng = np.random.default_rng(nq * dim)
    for _ in range(2):  # the second call copies the cached template: it must not have changed
        queries = rng.standard_normal((nq, dim)).astype(np.float32)
        extra = {k: v for k, v in consistency.items() if k != "use_default"}
        expected = Prepare.search_requests_with_expr(
            collection_name="items_v3",
            anns_field="embedding",
            param=json.loads(json.dumps(params)),
            limit=limit,
            data=queries.tolist(),
            expr=expression,
            use_default_consistency=consistency["use_default"],
            **extra,
        )
        got = search_request(
            "items_v3",
            "embedding",
            json.dumps(params),
            limit,
            expression,
            queries,
            **consistency,
        )
        assert got == expected
        assert got.SerializeToString() == expected.SerializeToString()
