"""Composition root of the stream worker: settings → adapters → runtimes (``aether worker``).

The only place in ``streams`` that reads the whole ``Settings``: every adapter of the package gets
its own section and the ``Deployment`` (namespace), the steps their configs.
"""

from __future__ import annotations

from bandits import configs_from_settings
from core.settings import Settings
from features.offline import FeatureHistory, OfflineEventLog
from features.offline_impressions import OfflineImpressionLog
from features.store import FeastOnlineStore
from retrieval.content import MiniLMTextEncoder
from retrieval.content_index import ContentIndex
from streams.agents import StreamRuntime, now_ms
from streams.bandit_agent import BanditRuntime
from streams.bandit_steps import BanditConfig, BanditSteps
from streams.catalogue_content import CatalogueContent
from streams.drift_agent import DriftRuntime
from streams.drift_steps import DriftConfig, DriftSteps
from streams.lag import LagTracker
from streams.publish import output_producer
from streams.sinks import StreamSinks
from streams.statestore import RedisStateStore
from streams.steps import StepConfig, StreamSteps
from streams.topics import TopicNames


def build_runtimes(settings: Settings) -> tuple[StreamRuntime, BanditRuntime, DriftRuntime]:
    """The feature runtime (with offline log, history, transitions, privacy), the bandit one and
    the drift monitors'."""
    # Both Redis adapters build their clients with ``features.redis_client.redis_client``: a
    # single Redis or a Redis Cluster (``AETHER_REDIS__CLUSTER``). On a cluster every key the
    # state store commits in one transaction shares the namespace's hash slot, and the Feast
    # rows are written slot by slot (docs/architecture.md, "Redis key layout and Redis Cluster").
    state = RedisStateStore(settings.redis, settings.deployment)
    topics = TopicNames.for_settings(settings)
    config = StepConfig.from_settings(settings.stream, topics, settings.kafka.partitions)
    producer = output_producer(
        settings.kafka.bootstrap_servers,
        settings.stream.max_event_bytes,
        partitioner=settings.stream.producer_partitioner,
    )
    content = (
        CatalogueContent(
            lambda: ContentIndex.held(settings.milvus, settings.deployment),
            MiniLMTextEncoder,
            from_ms=settings.stream.embed_catalogue_from_ms,
        )
        if settings.stream.embed_catalogue
        else None
    )
    if content is not None:
        content.preload()  # the model's seconds of CPU off the first catalogue update's path
    runtime = StreamRuntime(
        StreamSteps(config),
        writer=FeastOnlineStore(settings.redis, settings.deployment),
        state=state,
        producer=producer,
        sinks=StreamSinks(
            OfflineEventLog(settings.deployment),
            FeatureHistory(settings.deployment),
            OfflineImpressionLog(settings.deployment),
        ),
        content=content,
    )
    attribution, posterior = configs_from_settings(settings)
    bandit_config = BanditConfig(
        topics=topics,
        attribution=attribution,
        posterior=posterior,
        policy=config.policy,
        max_event_bytes=config.max_event_bytes,
        partitions=settings.kafka.partitions,
    )
    bandit = BanditRuntime(
        BanditSteps(bandit_config),
        state=state,
        producer=producer,
        now_ms=now_ms,
        idle_timeout_s=settings.stream.idle_partition_timeout_s,
    )
    drift_config = DriftConfig.for_stream(
        topics,
        config.policy,
        attribution_window_ms=attribution.window_ms,
        attribution_lateness_ms=attribution.allowed_lateness_ms,
        max_event_bytes=config.max_event_bytes,
    )
    drift = DriftRuntime(
        DriftSteps(drift_config), state=state, producer=producer, lag=LagTracker(), now_ms=now_ms
    )
    return runtime, bandit, drift
