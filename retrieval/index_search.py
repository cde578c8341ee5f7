"""Querying the Milvus item index: the searches ``ItemIndex`` inherits, and one pinned version.

``IndexSearch`` holds what ``retrieval.index.ItemIndex`` does with a built index — filtered
top-k search (through the alias, or in one named collection), fetching vectors, counting — and
the pymilvus error wrapping both share; ``ItemIndex`` adds building, the alias and garbage
collection. ``PinnedCollection`` is one version as a ``retrieval.ann.VectorSearcher``.

Filters go into Milvus' expression. Excluded ids (the user's history, dismissals, the request's
own) are over-fetched and removed here on an exact (FLAT) collection, which gives the answer
pushing them would give and spares Milvus parsing a long ``not in`` list per call; an
approximate index gets them pushed. Replies are read straight from Milvus' reply
(``retrieval.milvus_search.search_arrays``), not through pymilvus' per-hit objects.

Concurrent one-vector searches can share one Milvus call (``nq`` = their number):
``batch_searches(submit)`` sends each one-vector search of an exact (FLAT) collection to
``submit(group, query)`` (serving's ``serving.batching.MicroBatcher``), which answers it from one
``search_group`` call for the searches of its group (the same collection, filters and
dimension). Their exclusions differ, so they are not pushed into the shared expression: the
call over-fetches by each query's exclusions and removes them here, which on an exact index gives
each query the answer its own search gives (float ties aside). A group of one is searched as
without batching.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from core.errors import DependencyUnavailable, NotFoundError
from retrieval.expressions import filter_expression
from retrieval.index_types import IndexConfig
from retrieval.milvus_client import is_not_found
from retrieval.milvus_search import Hits, first_hits, search_arrays
from retrieval.sources import CandidateFilters

T = TypeVar("T")

MAX_TOPK = 16384  # Milvus' limit on limit
EXACT_INDEX = "FLAT"  # post-filtering equals pre-filtering only on an exact search


@dataclass(frozen=True)
class SearchGroup:
    """What the searches of one Milvus call share: where, which filter, which dimension."""

    collection: str | None  # None: the alias's active collection
    filters: CandidateFilters
    dim: int


@dataclass(frozen=True, eq=False)
class SearchQuery:
    """One search of a group: its vector, its ``k`` and the ids it must not return."""

    vector: np.ndarray  # (dim,) float32
    k: int
    excluded: frozenset[str]


SearchSubmit = Callable[[SearchGroup, SearchQuery], Hits]


class IndexSearch:
    """Searches of one alias's collections; the subclass opens ``_client`` and keeps
    ``_active`` (the collection the alias points at) with ``refresh``."""

    alias: str
    config: IndexConfig
    _client: Any
    _active: str | None
    _index_types: dict[str, str]
    _submit: SearchSubmit | None = None  # set by ``batch_searches``

    def batch_searches(self, submit: SearchSubmit | None) -> None:
        """Send one-vector searches of exact collections to ``submit`` (which answers them
        from ``search_group``); ``None``: every search is its own call again."""
        self._submit = submit

    def refresh(self) -> str | None:  # pragma: no cover - ItemIndex reads its alias registry
        raise NotImplementedError

    # -- error wrapping -------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        kwargs.setdefault("timeout", self.config.timeout_s)
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if is_not_found(exc):
                raise NotFoundError(f"milvus {what}: {exc}") from exc
            raise DependencyUnavailable("milvus", f"{what} failed: {exc}") from exc

    def index_type_of(self, collection: str) -> str:
        """The vector index type of ``collection`` (asked once, then cached)."""
        if collection not in self._index_types:
            described = self._call(
                "describe index", self._client.describe_index, collection, "embedding"
            )
            self._index_types[collection] = str(described.get("index_type", ""))
        return self._index_types[collection]

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        filters: CandidateFilters | None = None,
        excluded: Sequence[str] | frozenset[str] = (),
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(item_id, inner product)`` per query vector, filters pushed into Milvus.

        Excluded ids are over-fetched and removed here (exact collections, or ids an expression
        cannot carry) or pushed (approximate ones), so each answer has up to ``k`` eligible items.
        """
        return self._search(None, vectors, k, filters=filters, excluded=excluded)

    def search_in(
        self,
        collection: str,
        vectors: np.ndarray,
        k: int,
        *,
        filters: CandidateFilters | None = None,
        excluded: Sequence[str] | frozenset[str] = (),
    ) -> list[list[tuple[str, float]]]:
        """``search`` in one given collection, whatever the alias says (``PinnedCollection``)."""
        return self._search(collection, vectors, k, filters=filters, excluded=excluded)

    def _search(
        self,
        collection: str | None,
        vectors: np.ndarray,
        k: int,
        *,
        filters: CandidateFilters | None,
        excluded: Sequence[str] | frozenset[str],
    ) -> list[list[tuple[str, float]]]:
        queries = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        filters = filters or CandidateFilters(available_only=False)
        submit = self._submit
        if submit is not None and queries.shape[0] == 1 and self._exact(collection):
            group = SearchGroup(collection, filters, queries.shape[1])
            return [submit(group, SearchQuery(queries[0], k, frozenset(excluded)))]
        return self._search_alone(collection, queries, k, filters, excluded)

    def _search_alone(
        self,
        collection: str | None,
        queries: np.ndarray,
        k: int,
        filters: CandidateFilters,
        excluded: Sequence[str] | frozenset[str],
    ) -> list[list[tuple[str, float]]]:
        """One Milvus search for ``queries``. Exclusions are over-fetched and removed here on
        an exact collection (the answer pushing them gives, without Milvus parsing a long
        ``not in`` list per call) and pushed on an approximate one, which then looks past them;
        ids an expression cannot carry are over-fetched there too."""
        if self._exact(collection):
            expression, _ = filter_expression(filters, ())
            over_fetch = len(excluded)
        else:
            expression, over_fetch = filter_expression(
                filters, excluded, max_excluded=self.config.max_pushed_exclusions
            )
        hits = self._hits(collection, queries, min(MAX_TOPK, k + over_fetch), expression)
        removed = frozenset(excluded) if over_fetch else frozenset()
        return [first_hits(per_query, removed, k) for per_query in hits]

    def search_group(self, group: SearchGroup, queries: Sequence[SearchQuery]) -> list[Hits]:
        """One Milvus search (``nq = len(queries)``) for searches sharing ``group``: each query's
        top ``k`` without its excluded ids, over-fetched by as many (``batch_searches``). A
        group of one is searched as without batching."""
        if len(queries) == 1:
            alone = queries[0]
            vector = np.asarray(alone.vector, dtype=np.float32)[None, :]
            return self._search_alone(
                group.collection, vector, alone.k, group.filters, alone.excluded
            )
        shared, _ = filter_expression(group.filters, (), max_excluded=0)
        limit = min(MAX_TOPK, max(q.k + len(q.excluded) for q in queries))
        matrix = np.stack([np.asarray(q.vector, dtype=np.float32) for q in queries])
        hits = self._hits(group.collection, matrix, limit, shared)
        return [
            first_hits(per_query, query.excluded, query.k)
            for query, per_query in zip(queries, hits, strict=True)
        ]

    def _exact(self, collection: str | None) -> bool:
        """Whether ``collection`` (the active one for ``None``) is searched exactly."""
        return self._in(collection, lambda c: self.index_type_of(c) == EXACT_INDEX)

    def _hits(
        self, collection: str | None, queries: np.ndarray, limit: int, expression: str
    ) -> list[Hits]:
        """Milvus' answer per query, in ``collection`` or the alias's active collection."""
        return self._in(
            collection, lambda c: self._search_collection(c, queries, limit, expression)
        )

    def _in(self, collection: str | None, fn: Callable[[str], T]) -> T:
        """``fn(collection)``; for ``None``, ``fn`` of the alias's active collection, asked again
        after re-reading the alias if that collection was dropped meanwhile (the alias moved)."""
        if collection is not None:
            return fn(collection)
        try:
            return fn(self._active_collection())
        except NotFoundError:
            self.refresh()
            return fn(self._active_collection())

    def _active_collection(self) -> str:
        if self._active is None:
            raise NotFoundError(f"alias {self.alias} points at no collection; run `aether index`")
        return self._active

    def _search_collection(
        self, collection: str, queries: np.ndarray, limit: int, expression: str
    ) -> list[Hits]:
        params: dict[str, Any] = {"metric_type": "IP"}
        index_type = self.index_type_of(collection)
        if index_type == "IVF_FLAT":
            params["params"] = {"nprobe": self.config.nprobe}
        elif index_type == "HNSW":
            params["params"] = {"ef": max(self.config.hnsw_ef, limit)}
        return self._call(
            "search",
            search_arrays,
            self._client,
            collection,
            queries,
            limit=limit,
            expression=expression,
            search_params=params,
        )

    def fetch_vectors(self, item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Embeddings of ``item_ids`` from the active version (missing ids are left out)."""
        if not item_ids or self._active is None:
            return {}
        rows = self._call(
            "query",
            self._client.query,
            self._active,
            ids=list(item_ids),
            output_fields=["embedding"],
        )
        return {r["item_id"]: np.asarray(r["embedding"], dtype=np.float32) for r in rows}

    def count(self) -> int:
        if self._active is None:
            return 0
        rows = self._call(
            "count", self._client.query, self._active, filter="", output_fields=["count(*)"]
        )
        return int(rows[0]["count(*)"])


class PinnedCollection:
    """One index version as a ``VectorSearcher``: a serving release searches the collection it
    was built with, so a response never mixes one version's candidates with another's model."""

    def __init__(self, index: IndexSearch, collection: str) -> None:
        self.index = index
        self.collection = collection

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        filters: CandidateFilters | None = None,
        excluded: Sequence[str] | frozenset[str] = (),
    ) -> list[list[tuple[str, float]]]:
        return self.index.search_in(self.collection, vectors, k, filters=filters, excluded=excluded)
