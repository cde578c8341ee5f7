"""Composition root for the serving pipeline: settings + adapters -> one ``CandidateRetriever``.

Any ``UserEncoder`` drives the ANN and content sources: the ranker's ``encode_user`` when Milvus
holds that ranker's own item embeddings, the mean-history baseline otherwise
(``choose_user_encoder``). Each encoder has its fusion plan (reserved slots per 200 candidates,
fusion weight), chosen on ML-1M validation items by ``aether bench retrieval --tune-plan``
(figures and commands in ``docs/benchmarks/retrieval.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, Protocol

from core.settings import Deployment
from features.transition_store import RedisTransitionStore, TransitionStore, transition_key_prefix
from retrieval.ann import AnnSource, VectorSearcher
from retrieval.catalog import ItemCatalog
from retrieval.content import ContentSource
from retrieval.cooccurrence import CooccurrenceSource
from retrieval.encoders import ItemEmbeddings, MeanHistoryEncoder
from retrieval.merge import CandidateRetriever, SourcePlan
from retrieval.popular import FreshSource, PopularSource
from retrieval.sources import CandidateSource, UserEncoder

log = logging.getLogger(__name__)

DEFAULT_PLAN: Mapping[str, tuple[int, float]] = {
    "ann": (10, 1.0),
    "cooccurrence": (10, 2.0),
    "popular": (5, 0.5),
    "fresh": (3, 0.3),
    "content": (3, 0.3),
}

# The plan for the ranker's encoder: chosen among 36 on ML-1M validation items by
# `aether bench retrieval --tune-plan --ranker-checkpoint …` (docs/benchmarks/retrieval.md). Its
# ANN answers are good enough to earn twice the fusion weight, and co-occurrence more reserved slots.
RANKER_PLAN: Mapping[str, tuple[int, float]] = {
    "ann": (10, 2.0),
    "cooccurrence": (50, 1.0),
    "popular": (5, 0.5),
    "fresh": (3, 0.3),
    "content": (3, 0.3),
}


class RankerEncoder(UserEncoder, Protocol):
    model_version: str


def choose_user_encoder(
    item_vectors: ItemEmbeddings, indexed_model_version: str | None, ranker: RankerEncoder | None
) -> tuple[UserEncoder, Mapping[str, tuple[int, float]]]:
    """The user encoder that matches the indexed vectors, and its plan.

    The ranker's ``encode_user`` only lives in the space of its *own* item embeddings, so it is
    used only when the index was built from the same ``model_version``; any other vectors are
    queried with the mean of the user's recent item vectors (valid in every embedding space).
    """
    if ranker is not None and indexed_model_version == ranker.model_version:
        return ranker, RANKER_PLAN
    if indexed_model_version is not None:
        log.warning(
            "the index holds item embeddings of ranker %s but the serving ranker is %s: "
            "querying it with the mean-history encoder (re-run `aether index --ranker-checkpoint`)",
            indexed_model_version,
            ranker.model_version if ranker is not None else "none",
        )
    return MeanHistoryEncoder(item_vectors), DEFAULT_PLAN


def transition_store(
    deployment: Deployment, redis_client: Any, max_neighbours: int = 200
) -> RedisTransitionStore:
    """The Redis transition store under this deployment's namespace."""
    prefix = transition_key_prefix(deployment.namespace)  # the worker's (stream-slot) keys
    return RedisTransitionStore(redis_client, prefix, max_neighbours)


def build_retriever(
    *,
    index: VectorSearcher | None,
    encoder: UserEncoder | None,
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
    Without an ``index`` (or an ``encoder``) there is no ANN source: an empty deployment serves
    co-occurrence, popular and fresh items.
    """
    wrap = guard or (lambda source: source)
    sources: dict[str, CandidateSource] = {}
    if index is not None and encoder is not None:
        sources["ann"] = wrap(AnnSource(index, encoder))
    sources["cooccurrence"] = wrap(CooccurrenceSource(transitions, catalog=catalog))
    sources["popular"] = popular = PopularSource(popularity, catalog)
    sources["fresh"] = FreshSource(catalog, window_ms=fresh_window_ms)
    if content is not None:
        sources["content"] = content
    plans = [
        SourcePlan(sources[name], reserved=reserved, weight=weight)
        for name, (reserved, weight) in plan.items()
        if name in sources
    ]
    return CandidateRetriever(plans, catalog=catalog, fallback=popular, executor=executor)
