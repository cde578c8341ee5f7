"""Milvus searches answered as plain (id, score) lists, without pymilvus' per-hit objects.

``MilvusClient.search`` turns every hit of Milvus' reply into Python objects (``SearchResult``
→ ``HybridHits`` → a ``Hit`` per result), which on serving's path (200–400 hits per request)
was most of the ANN source's client CPU (issue 19; docs/benchmarks/serving.md section L: 0.85 →
0.58 ms of thread CPU per search, together with removing exclusions on the client,
``retrieval.index_search``).

``search_arrays`` sends the request ``MilvusClient.search`` would send (built by pymilvus'
``Prepare.search_requests_with_expr``, with the consistency timestamp and call metadata pymilvus
computes), on the client's own channel, checks the status as pymilvus does, and reads each
query's ids and scores straight from the reply's repeated fields. It reaches into four pymilvus
internals (``MilvusClient._get_connection`` and ``_generate_call_context``, the handler's
``_stub``, ``Prepare``): pymilvus is pinned (pyproject.toml), and
``tests/integration/retrieval/test_milvus_search_arrays.py`` compares the two on Milvus Lite, so
an upgrade that changes them fails there.
"""

from __future__ import annotations

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
    from pymilvus.client.prepare import Prepare
    from pymilvus.client.utils import check_status

    handler = client._get_connection()
    context = client._generate_call_context()
    consistency: dict[str, Any] = {}
    use_default = ts_utils.construct_guarantee_ts(
        collection, consistency, handler.server_address, context.get_db_name()
    )
    request = Prepare.search_requests_with_expr(
        collection_name=collection,
        anns_field=anns_field,
        param=search_params,
        limit=limit,
        data=np.asarray(queries, dtype=np.float32).tolist(),
        expr=expression,
        use_default_consistency=use_default,
        **consistency,
    )
    reply = handler._stub.Search(request, timeout=timeout, metadata=_api_level_md(context))
    check_status(reply.status)
    return split_hits(reply.results, len(queries))


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
