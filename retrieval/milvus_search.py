"""Milvus searches answered as plain (id, score) lists, without pymilvus' per-hit objects.

``MilvusClient.search`` turns every hit of Milvus' reply into Python objects (``SearchResult``
→ ``HybridHits`` → a ``Hit`` per result), which on serving's path (200–400 hits per request)
was most of the ANN source's client CPU (issue 19; docs/benchmarks/serving.md section L: 0.85 →
0.58 ms of thread CPU per search, together with removing exclusions on the client,
``retrieval.index_search``).

``search_arrays`` sends the request ``MilvusClient.search`` would send (the one pymilvus'
``Prepare.search_requests_with_expr`` builds, copied from a template per search shape: the
vectors and the consistency timestamp pymilvus computes set per call; the call metadata
pymilvus computes), on the client's own channel, checks the status as pymilvus does, and reads each
query's ids and scores straight from the reply's repeated fields. It reaches into five pymilvus
internals (``MilvusClient._get_connection`` and ``_generate_call_context``, the handler's
``_stub``, ``Prepare``, the ``grpc_gen`` messages): pymilvus is pinned (pyproject.toml),
``tests/unit/retrieval/test_search_request.py`` compares the requests with pymilvus' own, and
``tests/integration/retrieval/test_milvus_search_arrays.py`` the answers on Milvus Lite, so
an upgrade that changes them fails there.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np

from retrieval.milvus_client import import_pymilvus

# One query's hits, best first: (item id, inner product).
Hits = list[tuple[str, float]]


def first_hits(hits: Hits, excluded: frozenset[str] | set[str], k: int) -> Hits:
    """The first ``k`` of ``hits`` whose id is not ``excluded`` (an over-fetched answer cut)."""
    if not excluded:
        return hits[:k]
    return [hit for hit in hits if hit[0] not in excluded][:k]


def search_arrays(
    client: Any,
    collection: str,
    queries: np.ndarray,
    *,
    limit: int,
    expression: str,
    search_params: dict[str, Any],
    anns_field: str = "embedding",
    timeout: float | None = None,
) -> list[Hits]:
    """``client.search(collection, data=queries, …)``'s hits, one list per query row.

    Raises what pymilvus raises for a failed call (``MilvusException`` for a non-success status,
    ``grpc.RpcError`` for a failed RPC); the caller classifies it
    (``retrieval.index_search.IndexSearch._call``)."""
    import_pymilvus()
    from pymilvus.client import ts_utils
    from pymilvus.client.call_context import _api_level_md
    from pymilvus.client.utils import check_status

    handler = client._get_connection()
    context = client._generate_call_context()
    consistency: dict[str, Any] = {}
    use_default = ts_utils.construct_guarantee_ts(
        collection, consistency, handler.server_address, context.get_db_name()
    )
    request = search_request(
        collection,
        anns_field,
        json.dumps(search_params),
        limit,
        expression,
        np.asarray(queries, dtype=np.float32),
        use_default=use_default,
        **consistency,
    )
    reply = handler._stub.Search(request, timeout=timeout, metadata=_api_level_md(context))
    check_status(reply.status)
    return split_hits(reply.results, len(queries))


def search_request(
    collection: str,
    anns_field: str,
    params_json: str,
    limit: int,
    expression: str,
    queries: np.ndarray,
    *,
    use_default: bool,
    guarantee_timestamp: int = 0,
    consistency_level: int = 0,
) -> Any:
    """The ``SearchRequest`` pymilvus' ``Prepare.search_requests_with_expr`` builds, equal
    field for field (``tests/unit/retrieval/test_search_request.py``), made from a template
    built once per collection, field, parameters (``params_json``: ``search_params`` as JSON),
    limit and expression: what varies per call (the vectors, the consistency timestamp) is set
    on a copy, instead of pymilvus' parameter checks and conversions running on every search
    (docs/benchmarks/serving.md, section M: no saving could be told from that machine's
    noise)."""
    from pymilvus.grpc_gen import common_pb2, milvus_pb2

    request = milvus_pb2.SearchRequest()
    request.CopyFrom(_search_template(collection, anns_field, params_json, limit, expression))
    vectors = common_pb2.PlaceholderValue(
        tag="$0",
        type=common_pb2.PlaceholderType.FloatVector,
        values=[row.tobytes() for row in np.asarray(queries, dtype="<f4")],
    )
    request.placeholder_group = common_pb2.PlaceholderGroup(
        placeholders=[vectors]
    ).SerializeToString()
    request.nq = len(queries)
    request.use_default_consistency = use_default
    request.guarantee_timestamp = guarantee_timestamp
    request.consistency_level = consistency_level
    return request


@functools.lru_cache(maxsize=256)
def _search_template(
    collection: str, anns_field: str, params_json: str, limit: int, expression: str
) -> Any:
    """pymilvus' request for these settings (one zero vector); ``search_request`` copies it."""
    from pymilvus.client.prepare import Prepare

    return Prepare.search_requests_with_expr(
        collection_name=collection,
        anns_field=anns_field,
        param=json.loads(params_json),
        limit=limit,
        data=[[0.0]],
        expr=expression,
    )


def split_hits(results: Any, queries: int) -> list[Hits]:
    """A ``schema_pb2.SearchResultData`` as each query's hits (``topks`` says how many each
    has; a reply without hits has no ``topks``). Scores are Milvus' float32 values, widened."""
    ids_field = results.ids
    if ids_field.HasField("str_id"):
        ids: list[str] = list(ids_field.str_id.data)
    else:
        ids = [str(i) for i in ids_field.int_id.data]
    pairs = list(zip(ids, results.scores, strict=True))
    hits, start = [], 0
    for count in list(results.topks) or [0] * queries:
        hits.append(pairs[start : start + count])
        start += count
    return hits
