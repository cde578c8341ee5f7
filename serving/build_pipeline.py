"""Composition root of ``aether serve``: settings + registry → adapters → one live pipeline.

What it wires (each adapter owned by its package):

* online features: ``features.store.FeastOnlineStore`` (Feast's Redis layout, one round trip);
* the release (``serving.release``): the pair promoted in the model and index registry
  (``lifecycle.registry``), watched while serving; or files given by hand (``--embeddings``,
  ``--checkpoint``: pinned, not watched); or, while nothing is promoted, the embeddings file an
  older ``aether index --save-embeddings`` left in ``<data_dir>/artifacts``; or nothing at all
  (an empty deployment: popular and fresh items, flagged ``no_release``);
* the catalogue (``serving.live_state``): the release's items, the content collection's new items
  (``retrieval.content_index``) and every item the online store has a row for, re-read in the
  background with metadata, availability and trending scores (``serving.catalog_view``);
* retrieval: ``retrieval.build_retriever.build_retriever`` over the release's Milvus collection,
  the stream-fed transition store, popularity, freshness and the content source;
* ranking: the release's SASRec checkpoint, otherwise retrieval order;
* micro-batching (``serving.batching``, ``serving.batch_window_ms``): concurrent requests share
  the feature read, the SASRec pass for their user vectors and the Milvus search;
* impressions: the Kafka impression log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from bandits import configs_from_settings
from core.settings import Settings
from features.ports import OnlineFeatureReader
from features.redis_client import redis_client
from features.store import FeastOnlineStore
from features.transition_store import RedisTransitionStore
from lifecycle.registry import Registry
from retrieval.build_retriever import transition_store
from retrieval.content_index import ContentIndex
from retrieval.index import ItemIndex
from retrieval.sources import CandidateSource
from serving.batching import MicroBatcher, RequestBatching
from serving.breaker import CircuitBreaker
from serving.experiments import Experiments
from serving.exploration_slots import Explorer, RedisPosteriorReader
from serving.guards import (
    GuardedFeatures,
    GuardedPosteriors,
    GuardedSeenItems,
    GuardedSource,
    make_breaker,
)
from serving.impressions import KafkaImpressionLog, WithholdingImpressionLog
from serving.item_discovery import OnlineItemScanner
from serving.live_state import CatalogueSources, LiveState
from serving.pipeline import PipelineConfig, RecommendationPipeline, wall_clock_ms
from serving.release import (
    ServingRelease,
    arm_rankers,
    empty_release,
    file_release,
    registry_release,
)
from serving.rules import Rules
from serving.seen_items import RedisSeenItems
from serving.server_metrics import CountedTransitions
from serving.serving_state import RetrievalWiring

log = logging.getLogger(__name__)

BACKGROUND_TIMEOUT_S = 10.0  # catalogue reads run off the request path: no request budget


def embeddings_path(settings: Settings) -> Path:
    """Where ``aether index --save-embeddings`` used to leave the indexed ids and vectors (read
    while the registry has promoted nothing; the benchmarks and the demo still write it)."""
    return settings.data_dir / "artifacts" / f"{settings.namespace}_item_embeddings.npz"


def ranker_path(settings: Settings) -> Path:
    return settings.data_dir / "artifacts" / "ranker.pt"


@dataclass
class ServingApp:
    """The running pipeline plus what keeps it current and what must be closed with it."""

    pipeline: RecommendationPipeline
    settings: Settings
    live: LiveState
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    _closers: list[Any] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def refresh(self) -> None:
        """Pick up a promoted release and re-read the catalogue now (``serving.live_state``)."""
        self.live.refresh()

    def start_refreshing(self, every_s: float) -> None:
        def loop() -> None:
            while not self._stop.wait(every_s):
                try:  # what changed since the last pass; everything when due (live_state)
                    self.live.refresh(full=False)
                except Exception:  # keep serving the last good state
                    log.exception("catalogue refresh failed; keeping the previous one")

        self._thread = threading.Thread(target=loop, name="catalog-refresh", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for close in reversed(self._closers):
            try:
                close()
            except Exception:
                log.exception("error while closing %s", close)


def initial_release(settings: Settings, registry: Registry, index: ItemIndex) -> ServingRelease:
    """The promoted release; else the legacy embeddings file; else the empty release. A promoted
    release that does not load is logged and replaced by the next one that does: ``aether
    serve`` starts anyway (it would only restart in a loop)."""
    promoted = registry.promoted()
    if promoted is not None:
        try:
            return registry_release(registry, promoted, index)
        except Exception:
            log.exception("promoted release %s did not load; starting without it", promoted.label)
            return empty_release()
    legacy = embeddings_path(settings)
    if legacy.is_file():
        log.info("nothing promoted in %s: serving %s", registry.root, legacy)
        return file_release(legacy, ranker_path(settings), index)
    log.warning(
        "nothing indexed yet (registry %s is empty): serving popular and fresh items until "
        "`aether index` promotes a release",
        registry.root,
    )
    return empty_release()


def request_batching(
    settings: Settings,
    features: OnlineFeatureReader,
    index: ItemIndex,
    transitions: RedisTransitionStore,
    posteriors: RedisPosteriorReader,
) -> RequestBatching | None:
    """The pipeline's micro-batching (``serving.batching``), with the index's searches, the
    co-occurrence reads and the posterior reads sent through it; ``None`` when
    ``serving.batch_window_ms`` is 0."""
    window_s, max_size = settings.serving.batch_window_ms / 1000, settings.serving.batch_max_size
    if window_s <= 0:
        index.batch_searches(None)
        transitions.batch_reads(None)
        posteriors.batch_reads(None)
        return None
    searches = MicroBatcher("ann", index.search_group, window_s=window_s, max_size=max_size)
    index.batch_searches(searches.submit)
    neighbours = MicroBatcher(
        "cooccurrence", transitions.read_batch, window_s=window_s, max_size=max_size
    )
    transitions.batch_reads(neighbours.submit)
    posterior_reads = MicroBatcher(
        "posteriors", posteriors.read_batch, window_s=window_s, max_size=max_size
    )
    posteriors.batch_reads(posterior_reads.submit)
    return RequestBatching(features, window_s=window_s, max_size=max_size, searches=searches)


def build_serving_app(
    settings: Settings,
    *,
    checkpoint: Path | None = None,
    embeddings: Path | None = None,
    index: ItemIndex | None = None,
    clock_ms: Callable[[], int] = wall_clock_ms,
) -> ServingApp:
    """Wire the pipeline. ``checkpoint``/``embeddings`` pin a release given by hand (the
    registry is then not watched). ``index``: an open ``ItemIndex`` to reuse (it is closed with
    the app); Milvus Lite cannot be re-opened in the same process after a close and a pause.
    ``clock_ms``: serving time, stamped on impressions (a simulation replaying event time, such
    as the demo, passes its own clock so that impressions and feedback share one timeline)."""
    # Concurrency comes from requests: numeric work inside one request runs on one thread. Left
    # alone, OpenBLAS's spinning pool cost ~25 ms of CPU per request (docs/benchmarks/serving.md).
    threadpool_limits(limits=1)
    torch.set_num_threads(1)

    # Request-path clients time out within the request budget; a breaker per dependency turns a
    # dead one into an immediate fallback (serving.guards).
    budget_s = settings.serving.deadline_ms / 1000
    # A single Redis or a Redis Cluster (``AETHER_REDIS__CLUSTER``, features.redis_client). On a
    # cluster every reader below works unchanged: single-key reads, and pipelines the cluster
    # client splits by node.
    client = redis_client(settings.redis, timeout_s=budget_s)
    background = redis_client(settings.redis, timeout_s=BACKGROUND_TIMEOUT_S)
    features = FeastOnlineStore(settings.redis, settings.deployment, client=client)
    index = index or ItemIndex.from_settings(settings.milvus, settings.deployment)
    content = ContentIndex.from_settings(settings.milvus, settings.deployment, client=index.client)
    # One breaker per call site: a call that skips its dependency (a cold user's ANN, say)
    # must not count as a success for a different call that needs it.
    breakers = {
        name: make_breaker(name)
        for name in ("features", "seen_items", "posteriors", "ann", "cooccurrence")
    }
    slow_s = budget_s / 2
    executor = ThreadPoolExecutor(
        max_workers=4 * settings.serving.max_workers, thread_name_prefix="source"
    )

    def guard(source: CandidateSource) -> CandidateSource:
        return GuardedSource(source, breakers[source.name], slow_s)

    registry = Registry.for_deployment(settings.deployment)
    if checkpoint is not None or embeddings is not None:
        release = file_release(
            embeddings or embeddings_path(settings), checkpoint or ranker_path(settings), index
        )
        watched: Registry | None = None
        log.info("serving the files given (%s): the registry is not watched", release.label)
    else:
        release = initial_release(settings, registry, index)
        watched = registry
    transitions = transition_store(settings.deployment, client)
    live = LiveState(
        CatalogueSources(
            features=FeastOnlineStore(settings.redis, settings.deployment, client=background),
            registry=watched,
            index=index,
            content=content,
            scanner=OnlineItemScanner(background, settings.deployment),
        ),
        RetrievalWiring(CountedTransitions(transitions), guard, executor),
        release,
    )

    guarded_features = GuardedFeatures(features, breakers["features"], slow_s)
    _, posterior_config = configs_from_settings(settings)
    posteriors = RedisPosteriorReader(client, settings.redis_key, posterior_config)
    batching = request_batching(settings, guarded_features, index, transitions, posteriors)
    experiments = (
        Experiments.load(settings.serving.experiments_file)
        if settings.serving.experiments_file
        else None
    )
    pipeline = RecommendationPipeline(
        features=guarded_features,
        batching=batching,
        state=live.build(),
        impressions=(
            impressions := WithholdingImpressionLog(
                KafkaImpressionLog(settings), client, settings.namespace
            )
        ),
        config=PipelineConfig(
            candidates=settings.serving.candidates,
            mmr_lambda=settings.serving.mmr_lambda,
            exploration_slots=settings.bandit.exploration_slots,
            deadline_s=budget_s,
        ),
        explorer=Explorer(
            GuardedPosteriors(posteriors, breakers["posteriors"], slow_s),
            posterior_config,
        ),
        rules=Rules.load(settings.serving.rules_file) if settings.serving.rules_file else None,
        experiments=experiments,
        arm_rankers=arm_rankers(registry, experiments.model_versions()) if experiments else None,
        seen=GuardedSeenItems(
            RedisSeenItems(client, settings.namespace), breakers["seen_items"], slow_s
        ),
        clock_ms=clock_ms,
    )
    live.on_state = pipeline.swap
    log.info("serving %s", live.release.label)
    return ServingApp(
        pipeline=pipeline,
        settings=settings,
        live=live,
        breakers=breakers,
        _closers=[
            impressions.close,
            lambda: executor.shutdown(wait=False, cancel_futures=True),
            index.close,
            background.close,
            client.close,
        ],
    )
