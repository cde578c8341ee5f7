"""Composition root for the serving pipeline: settings + adapters -> one ``CandidateRetriever``.

The default plan (reserved slots per 200 candidates, fusion weight) is the one measured in
``docs/benchmarks/retrieval.md``. Any ``UserEncoder`` drives the ANN and content sources: the
mean-history baseline today, the ranker's ``encode_user`` when its embeddings are indexed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from retrieval.ann import AnnSource, VectorSearcher
from retrieval.catalog import ItemCatalog
from retrieval.content import ContentSource
from retrieval.cooccurrence import CooccurrenceSource, RedisTransitionStore, TransitionStore
from retrieval.merge import CandidateRetriever, SourcePlan
from retrieval.popular import FreshSource, PopularSource
from retrieval.sources import CandidateSource, UserEncoder

DEFAULT_PLAN: Mapping[str, tuple[int, float]] = {
    "ann": (10, 1.0),
    "cooccurrence": (10, 2.0),
    "popular": (5, 0.5),
    "fresh": (3, 0.3),
    "content": (3, 0.3),
}


def transition_store(
    settings: Any, redis_client: Any, max_neighbours: int = 200
) -> TransitionStore:
    """The Redis transition store under this deployment's namespace."""
    return RedisTransitionStore(redis_client, settings.redis_key("retrieval"), max_neighbours)


def build_retriever(
    *,
    index: VectorSearcher,
    encoder: UserEncoder,
    catalog: ItemCatalog,
    transitions: TransitionStore,
    popularity: Mapping[str, float],
    content: ContentSource | None = None,
    fresh_window_ms: int = 30 * 24 * 3600 * 1000,
    plan: Mapping[str, tuple[int, float]] = DEFAULT_PLAN,
    guard: Callable[[CandidateSource], CandidateSource] | None = None,
    executor: Executor | None = None,
) -> CandidateRetriever:
    """All sources, fused with ``plan``; popular-over-the-catalogue is the never-empty fallback.

    ``guard`` wraps each source that does I/O (ANN, co-occurrence), e.g. in a circuit breaker;
    ``executor`` lets the retriever ask the sources in parallel, each under the request's timeout.
    """
    popular = PopularSource(popularity, catalog)
    wrap = guard or (lambda source: source)
    sources: dict[str, CandidateSource] = {
        "ann": wrap(AnnSource(index, encoder)),
        "cooccurrence": wrap(CooccurrenceSource(transitions, catalog=catalog)),
        "popular": popular,
        "fresh": FreshSource(catalog, window_ms=fresh_window_ms),
    }
    if content is not None:
        sources["content"] = content
    plans = [
        SourcePlan(sources[name], reserved=reserved, weight=weight)
        for name, (reserved, weight) in plan.items()
        if name in sources
    ]
    return CandidateRetriever(plans, catalog=catalog, fallback=popular, executor=executor)
