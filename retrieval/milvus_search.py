"""Milvus searches answered as arrays, without pymilvus' per-hit objects.

``MilvusClient.search`` turns every hit of Milvus' reply into Python objects (``SearchResult``
→ ``HybridHits`` → a ``Hit`` per result), which on serving's path (200–400 hits per request)
is most of the ANN source's client CPU (issue 19; no benchmark figure recorded yet).

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

from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.milvus_client import import_pymilvus


@dataclass(frozen=True, slots=True)
class QueryHits:
    """One query's hits, best first: ``ids[i]`` scored ``scores[i]`` (inner product)."""

    ids: list[str]
    scores: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.ids)

    def without(self, excluded: frozenset[str] | set[str], k: int) -> QueryHits:
        """The first ``k`` hits whose id is not ``excluded``."""
        if not excluded:
            return QueryHits(self.ids[:k], self.scores[:k])
        keep = [n for n, item in enumerate(self.ids) if item not in excluded][:k]
        return QueryHits([self.ids[n] for n in keep], self.scores[keep])

    def pairs(self) -> list[tuple[str, float]]:
        return list(zip(self.ids, self.scores.tolist(), strict=True))


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
) -> list[QueryHits]:
    """``client.search(collection, data=queries, …)``'s hits, one ``QueryHits`` per query row.

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


def split_hits(results: Any, queries: int) -> list[QueryHits]:
    """A ``schema_pb2.SearchResultData`` as one ``QueryHits`` per query (``topks`` says how
    many hits each has; a reply without hits has no ``topks``)."""
    ids_field = results.ids
    if ids_field.HasField("str_id"):
        ids = list(ids_field.str_id.data)
    else:
        ids = [str(i) for i in ids_field.int_id.data]
    scores = np.asarray(results.scores, dtype=np.float64)
    counts = list(results.topks) or [0] * queries
    hits, start = [], 0
    for count in counts:
        hits.append(QueryHits(ids[start : start + count], scores[start : start + count]))
        start += count
    return hits
