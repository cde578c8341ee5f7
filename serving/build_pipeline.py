"""Composition root of ``aether serve``: settings + artifacts → adapters → one pipeline.

What it wires (each adapter owned by its package):

* online features: ``features.store.FeastOnlineStore`` (Feast's Redis layout, one round trip);
* items: the id list of the indexed embeddings (``aether index`` writes them next to the Milvus
  collection), their metadata and popularity from the online item features, refreshed in the
  background (``serving.catalog_view``);
* retrieval: ``retrieval.build_retriever.build_retriever`` over Milvus, the stream-fed transition store,
  popularity and freshness;
* ranking: the SASRec checkpoint when one exists, otherwise retrieval order;
* impressions: the Kafka impression log.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import torch
from threadpoolctl import threadpool_limits

from bandits import configs_from_settings
from core.errors import NotFoundError
from core.settings import Settings
from features.store import FeastOnlineStore
from ranker.scoring import SASRecRanker
from retrieval.build_retriever import build_retriever, choose_user_encoder, transition_store
from retrieval.embeddings import embeddings_model_version, load_embeddings
from retrieval.encoders import ItemEmbeddings
from retrieval.index import ItemIndex
from retrieval.sources import CandidateSource
from serving.breaker import CircuitBreaker
from serving.catalog_view import load_snapshot
from serving.experiments import Experiments
from serving.exploration_slots import Explorer, RedisPosteriorReader
from serving.guards import GuardedFeatures, GuardedPosteriors, GuardedSource, make_breaker
from serving.impressions import KafkaImpressionLog
from serving.pipeline import PipelineConfig, RecommendationPipeline, RetrievalState
from serving.rules import Rules

log = logging.getLogger(__name__)


def embeddings_path(settings: Settings) -> Path:
    """Where ``aether index`` leaves the ids and vectors it indexed."""
    return settings.data_dir / "artifacts" / f"{settings.namespace}_item_embeddings.npz"


def ranker_path(settings: Settings) -> Path:
    return settings.data_dir / "artifacts" / "ranker.pt"


@dataclass
class ServingApp:
    """The running pipeline plus what must be refreshed and closed with it."""

    pipeline: RecommendationPipeline
    settings: Settings
    _refresh: Any
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    _closers: list[Any] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def refresh(self) -> None:
        self.pipeline.retrieval = self._refresh()

    def start_refreshing(self, every_s: float) -> None:
        def loop() -> None:
            while not self._stop.wait(every_s):
                try:
                    self.refresh()
                except Exception:  # keep serving the last good catalogue
                    log.exception("catalogue refresh failed; keeping the previous one")

        self._thread = threading.Thread(target=loop, name="catalog-refresh", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for close in reversed(self._closers):
            try:
                close()
            except Exception:
                log.exception("error while closing %s", close)


def build_serving_app(
    settings: Settings,
    *,
    checkpoint: Path | None = None,
    embeddings: Path | None = None,
    index: ItemIndex | None = None,
) -> ServingApp:
    """Wire the pipeline. ``index``: an open ``ItemIndex`` to reuse (it is closed with the app);
    Milvus Lite cannot be re-opened in the same process after a close and a pause."""
    # Concurrency comes from requests: numeric work inside one request runs on one thread. Left
    # alone, OpenBLAS's spinning pool cost ~25 ms of CPU per request (docs/benchmarks/serving.md).
    threadpool_limits(limits=1)
    torch.set_num_threads(1)
    embeddings = embeddings or embeddings_path(settings)
    if not embeddings.is_file():
        raise NotFoundError(f"{embeddings} not found: run `aether index` first")
    item_ids, matrix = load_embeddings(embeddings)
    item_vectors = ItemEmbeddings(item_ids, matrix)
    vectors_by_id = {item_id: item_vectors.matrix[row] for row, item_id in enumerate(item_ids)}

    # Request-path clients time out within the request budget; a breaker per dependency turns a
    # dead one into an immediate fallback (serving.guards).
    budget_s = settings.serving.deadline_ms / 1000
    client = redis.Redis.from_url(
        settings.redis.url.get_secret_value(),
        socket_connect_timeout=budget_s,
        socket_timeout=budget_s,
    )
    features = FeastOnlineStore(settings.redis, settings.deployment, client=client)
    index = index or ItemIndex.from_settings(settings.milvus, settings.deployment)
    transitions = transition_store(settings.deployment, client)
    # One breaker per call site: a call that skips its dependency (a cold user's ANN, say)
    # must not count as a success for a different call that needs it.
    breakers = {
        name: make_breaker(name) for name in ("features", "posteriors", "ann", "cooccurrence")
    }
    slow_s = budget_s / 2
    executor = ThreadPoolExecutor(
        max_workers=4 * settings.serving.max_workers, thread_name_prefix="source"
    )

    def guard(source: CandidateSource) -> CandidateSource:
        return GuardedSource(source, breakers[source.name], slow_s)

    checkpoint = checkpoint or ranker_path(settings)
    ranker = SASRecRanker.from_checkpoint(checkpoint) if checkpoint.is_file() else None
    if ranker is None:
        log.info("no ranker checkpoint at %s: serving retrieval order", checkpoint)
    encoder, plan = choose_user_encoder(item_vectors, embeddings_model_version(embeddings), ranker)

    def retrieval_state() -> RetrievalState:
        snapshot = load_snapshot(features, item_ids)
        retriever = build_retriever(
            index=index,
            encoder=encoder,
            plan=plan,
            catalog=snapshot.catalog,
            transitions=transitions,
            popularity=snapshot.popularity,
            guard=guard,
            executor=executor,
        )
        return RetrievalState(retriever, snapshot.catalog, snapshot.as_of_ms or None)

    _, posterior_config = configs_from_settings(settings)
    pipeline = RecommendationPipeline(
        features=GuardedFeatures(features, breakers["features"], slow_s),
        retrieval=retrieval_state(),
        ranker=ranker,
        impressions=(impressions := KafkaImpressionLog(settings)),
        config=PipelineConfig(
            candidates=settings.serving.candidates,
            mmr_lambda=settings.serving.mmr_lambda,
            exploration_slots=settings.bandit.exploration_slots,
            deadline_s=budget_s,
        ),
        explorer=Explorer(
            GuardedPosteriors(
                RedisPosteriorReader(client, settings.redis_key, posterior_config),
                breakers["posteriors"],
                slow_s,
            ),
            posterior_config,
        ),
        rules=Rules.load(settings.serving.rules_file) if settings.serving.rules_file else None,
        experiments=(
            Experiments.load(settings.serving.experiments_file)
            if settings.serving.experiments_file
            else None
        ),
        item_vectors=vectors_by_id,
        user_encoder=encoder,
    )
    return ServingApp(
        pipeline=pipeline,
        settings=settings,
        _refresh=retrieval_state,
        breakers=breakers,
        _closers=[
            impressions.flush,
            lambda: executor.shutdown(wait=False, cancel_futures=True),
            index.close,
            client.close,
        ],
    )
