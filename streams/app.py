"""The Faust application: one app per namespace, four thin agents over ``StreamRuntime``.

``create_app(settings, runtime)`` names the app after ``settings.consumer_group`` (so its
consumer group is namespaced), points it at ``settings.kafka.bootstrap_servers`` with the short
session timeout Tansu needs for quick group joins, and registers:

=====================  ===================================  ====================================
agent                  consumes                             does
=====================  ===================================  ====================================
``interactions``       ``<ns>.events`` + ``<ns>.privacy``   user features, privacy requests,
                       (key user)                           offline log, item transitions;
                                                            forwards to item-updates
``impressions``        ``<ns>.impressions`` (key user)      forwards one update per shown item
``catalog``            ``<ns>.items`` (key item)            forwards catalogue updates
``item_features``      ``<ns>.item-updates`` (key item)     item features
``bandit_attribution`` ``<ns>.impressions``, ``events``,   reward attribution → bandit-outcomes
                       ``privacy`` (key user)
``bandit_posteriors``  ``<ns>.bandit-outcomes`` (key item)  posteriors (``streams.bandit_agent``)
=====================  ===================================  ====================================

The two bandit agents run when a ``BanditRuntime`` is given (``streams.bootstrap`` always gives
one). Every agent consumes in batches (``take_events(batch_size, within=batch_timeout_s)``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from aether.settings import Settings
from streams.agents import StreamRuntime, timed
from streams.bandit_agent import BanditRuntime
from streams.handlers import SourceRecord

# Faust hard-codes aiokafka's ``fetch_max_wait_ms=1500``. Tansu holds a fetch for most of its max
# wait even when records arrive meanwhile (seen during development: hundreds of ms from produce to
# consume at 1500, a few ms at 20), which would dominate feature freshness; a short wait costs only
# some idle fetch requests.
FETCH_MAX_WAIT_MS = 20


class _LowLatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by AIOKafkaConsumer.start()
        return consumer


class _LowLatencyConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)


def broker_url(bootstrap_servers: str) -> str:
    """``host:port[,host:port]`` → Faust's ``kafka://host:port;kafka://host:port``."""
    hosts = [h.strip() for h in bootstrap_servers.split(",") if h.strip()]
    return ";".join(f"kafka://{h}" for h in hosts)


def create_app(
    settings: Settings, runtime: StreamRuntime, bandit: BanditRuntime | None = None
) -> faust.App:
    session_s = settings.kafka.session_timeout_ms / 1000
    datadir = settings.data_dir / "faust" / settings.namespace
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.consumer_group,
        broker=broker_url(settings.kafka.bootstrap_servers),
        store="memory://",
        datadir=str(datadir),
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=1,
        broker_session_timeout=session_s,
        broker_heartbeat_interval=max(0.5, session_s / 6),
        broker_rebalance_timeout=max(10.0, 2 * session_s),
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        autodiscover=False,
    )
    app.transport.Consumer = _LowLatencyConsumer  # type: ignore[misc]  # this app only
    topics = runtime.topics
    batch_size = settings.stream.batch_size
    within = settings.stream.batch_timeout_s

    def batched(name: str, handle: Callable[[Sequence[SourceRecord]], Awaitable[Any]]) -> Any:
        async def agent(stream: faust.StreamT[Any]) -> None:
            async for events in stream.take_events(batch_size, within=within):  # type: ignore[attr-defined]
                records = [_record(event) for event in events]
                with timed(name):
                    await handle(records)

        agent.__name__ = name
        agent.__qualname__ = name
        return agent

    agents: list[tuple[str, tuple[str, ...], Callable[..., Awaitable[Any]]]] = [
        ("interactions", (topics.events, topics.privacy), runtime.on_interactions),
        ("impressions", (topics.impressions,), runtime.on_impressions),
        ("catalog", (topics.items,), runtime.on_catalog),
        ("item_features", (topics.item_updates,), runtime.on_item_updates),
    ]
    if bandit is not None:
        agents += [
            (
                "bandit_attribution",
                (topics.impressions, topics.events, topics.privacy),
                bandit.on_attribution,
            ),
            ("bandit_posteriors", (topics.bandit_outcomes,), bandit.on_outcomes),
        ]
    for name, names, handle in agents:
        source = app.topic(
            *names, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw"
        )
        app.agent(source, name=name)(batched(name, handle))
    return app


def _record(event: faust.EventT[Any]) -> SourceRecord:
    message = event.message
    value = message.value if isinstance(message.value, bytes) else bytes(message.value or b"")
    key = message.key if isinstance(message.key, bytes | None) else bytes(message.key)
    return SourceRecord(message.topic, message.partition, message.offset, value, key)
