"""The Faust application: one app per namespace, four thin agents over ``StreamRuntime``.

``create_app(settings, runtime)`` names the app after ``settings.consumer_group`` (so its
consumer group is namespaced), points it at ``settings.kafka.bootstrap_servers`` with the short
session timeout Tansu needs for quick group joins, and registers:

=====================  ===================================  ====================================
agent                  consumes                             does
=====================  ===================================  ====================================
``interactions``       ``<ns>.events``, ``<ns>.privacy``,   ``StreamRuntime.on_interactions``:
                       ``<ns>.impressions`` (key user)      user features, privacy requests,
                                                            offline log, item transitions,
                                                            forwards to item-updates;
                                                            ``on_impressions``: forwards one
                                                            update per shown item; then
                                                            ``BanditRuntime.on_attribution``:
                                                            reward attribution → bandit-outcomes
``catalog``            ``<ns>.items`` (key item)            forwards catalogue updates
``item_features``      ``<ns>.item-updates`` (by item)      item features
``bandit_posteriors``  ``<ns>.bandit-outcomes`` (by item)   posteriors (``streams.bandit_agent``),
                                                            then the outcome drift monitors
=====================  ===================================  ====================================

The ``interactions`` agent ends each batch with the user-side drift monitors when a
``DriftRuntime`` is given (``streams.drift_agent``). Every agent notes the last record it handled
per partition in a ``LagTracker``; a one-second timer exports the consumer lag gauges from it.

Attribution and the posteriors agent run when a ``BanditRuntime`` is given (``streams.build_worker``
always gives one). Every agent consumes in batches that close as soon as nothing more is queued
(``streams.batching.take_available``: at most ``batch_size`` events, ``catch_up_batch_size`` in a
backlog, ``batch_timeout_s`` only a safety bound on waiting), taken straight from each stream's
queue rather than through Faust's per-event stream iterator. The user-keyed topics share one
agent, because every record's trip through Faust (fetch, delivery, queue, ack) is paid once per
agent that consumes it (``docs/benchmarks/ingest.md``): three agents over them (features,
impressions, attribution) had each event cross Faust twice.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from time import monotonic
from typing import Any

import faust
from faust.sensors.monitor import Monitor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from faust.types import TP
from mode.utils.queues import FlowControlQueue

from core.settings import Settings
from streams import worker_metrics
from streams.agents import StreamRuntime, timed
from streams.bandit_agent import BanditRuntime
from streams.batching import CatchUp, take_available
from streams.drift_agent import DriftRuntime
from streams.eager import EagerWaitFirst
from streams.handlers import Effects, SourceRecord, decoded_by_position
from streams.lag import LagTracker
from streams.routing import misrouted, reroute
from streams.steps import split_user_records

# Faust hard-codes aiokafka's ``fetch_max_wait_ms=1500``. Tansu holds a fetch for most of its max
# wait even when records arrive meanwhile (seen during development: hundreds of ms from produce to
# consume at 1500, a few ms at 20), which would dominate feature freshness; a short wait costs only
# some idle fetch requests.
FETCH_MAX_WAIT_MS = 20


def poll_records(buffer_events: int) -> int:
    """Most records one consumer poll returns, so that a delivery never waits for queue room.

    Fetched records wait in a queue per agent (Faust's ``stream_buffer_maxsize``, our
    ``AETHER_STREAM__BUFFER_EVENTS``). Faust stops polling a partition once the queue holds 80 % of
    its size (``mode``'s ``FlowControlQueue``: size / ``pressure_high_ratio``) but delivers the
    rest of the poll it is in; when that overflows the queue, each further delivery waits for a
    free slot through a task and a race (``mode``'s ``wait_first``, ``streams.eager``). With Faust's defaults (4,096,
    and no limit on a poll: everything fetched, up to 1 MiB per partition) that was nearly every
    event of a backlog. A poll of at most the last fifth that starts before the pause never
    overflows; one can only for a partition that had no delivery since the queue passed 80 %,
    once (its first delivery pauses it). docs/benchmarks/ingest.md, session 23.
    """
    return max(1, buffer_events - math.floor(buffer_events / FlowControlQueue.pressure_high_ratio))


class _LowLatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by AIOKafkaConsumer.start()
        return consumer


class _LowLatencyConsumer(EagerWaitFirst, faust_aiokafka.Consumer):
    """Short fetch waits, and no task race per delivered message (``streams.eager``)."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _UnthreadedBuffer(ProducerBuffer):
    """Faust's producer buffer, sized without a settings lookup.

    The conductor awaits ``wait_until_ebb`` for every delivered message, and Faust's ``size``
    reads ``app.conf.producer_threaded`` each time, through the settings registry's
    ``__getattribute__``. The worker never sends through Faust's producer, which is
    never threaded here (``_Producer``), so the size is the pending queue's length.
    """

    @property
    def size(self) -> int:
        return len(self.pending._queue)  # type: ignore[attr-defined]


class _Producer(faust_aiokafka.Producer):
    """Faust's producer with an ``_UnthreadedBuffer`` (this app only, as the consumer)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.app.conf.producer_threaded:
            buffer = _UnthreadedBuffer(loop=self.loop, beacon=self.beacon)
            buffer.app = self.app
            self.buffer = buffer


class _PerBatchMonitor(Monitor):
    """Faust's stats sensor with its per-message hooks cut down to what Faust itself reads.

    The default ``Monitor`` does bookkeeping for every message in and out (timestamps, per-topic
    and per-stream counters) that only Faust's web views read, and we run without them; our
    Prometheus metrics count per batch. The one thing kept is ``stream_inbound_time``: the
    consumer's stall check (``verify_event_path``) reads it, and without it Faust would report
    every lagging partition as "stream idle since start"; ``take_available`` calls it once per
    partition and batch.
    """

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = monotonic()
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


class _BytesSchema(faust.Schema):
    """Each record's key and value as the broker's bytes, straight into Faust's event.

    Faust's own ``Schema`` runs key and value through its codec registry per message (``raw``
    hands the bytes back) and looks up the event class in the app's settings each time; the
    agents decode the bytes themselves (``streams.steps``), so this one skips both.
    """

    def compile(self, app: Any, **_: Any) -> Any:
        new_event = app.conf.Event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return new_event(app, message.key, message.value, message.headers, message)

        return decode


def raw_topic(app: faust.App, *names: str) -> Any:
    """``names`` as one Faust source whose events carry the records' bytes (``_BytesSchema``)."""
    return app.topic(*names, schema=_BytesSchema(key_type=bytes, value_type=bytes))


def broker_url(bootstrap_servers: str) -> str:
    """``host:port[,host:port]`` → Faust's ``kafka://host:port;kafka://host:port``."""
    hosts = [h.strip() for h in bootstrap_servers.split(",") if h.strip()]
    return ";".join(f"kafka://{h}" for h in hosts)


def _faust_app(settings: Settings) -> faust.App:
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
        Monitor=_PerBatchMonitor,
        stream_buffer_maxsize=settings.stream.buffer_events,
        broker_max_poll_records=poll_records(settings.stream.buffer_events),
    )
    app.transport.Consumer = _LowLatencyConsumer  # type: ignore[misc]  # this app only
    app.transport.Producer = _Producer  # type: ignore[misc]
    return app


def create_app(
    settings: Settings,
    runtime: StreamRuntime,
    bandit: BanditRuntime | None = None,
    drift: DriftRuntime | None = None,
) -> faust.App:
    app = _faust_app(settings)
    topics = runtime.topics
    batch_size = settings.stream.batch_size
    within = settings.stream.batch_timeout_s
    catch_up = catch_up_of(settings)
    lag = drift.lag if drift is not None else LagTracker()
    lag.highwater = lambda topic, partition: app.consumer.highwater(TP(topic, partition))

    def batched(
        name: str, handle: Callable[[Sequence[SourceRecord]], Awaitable[Any]], linger_s: float
    ) -> Any:
        async def agent(stream: faust.StreamT[Any]) -> None:
            async for events in take_available(
                stream, batch_size, within, catch_up=catch_up, linger_s=linger_s
            ):
                records = [_record(event) for event in events]
                with timed(name):
                    await handle(records)
                lag.handled(records)

        agent.__name__ = name
        agent.__qualname__ = name
        return agent

    partitions = settings.kafka.partitions

    # The consumer names (``streams.state_port.CONSUMERS``) of the steps ``on_users`` may run.
    user_consumers = ("interactions", "impressions", "attribution", "drift")

    async def on_users(records: Sequence[SourceRecord]) -> None:
        # One agent for the three user-keyed topics: each record crosses Faust once, not once
        # per handler that needs it. Each handler applies and commits its own effects in the
        # order it always had; the batch is acked after all of them, and each is idempotent
        # on re-delivery, so a crash anywhere in between stays harmless.
        # Records a non-murmur2 producer put on another partition than their user's are sent
        # to their user's partition first and handled there (``streams.routing``).
        records, away = misrouted(records, partitions)
        if away:
            await reroute(runtime.producer, away, partitions)
            for record in away:
                worker_metrics.EVENTS.labels(record.topic, "rerouted").inc()
        if not records:
            return
        # The steps' consumed offsets, read in one round trip for all of them.
        with runtime.state.reading_offsets_ahead(
            user_consumers, {(r.topic, r.partition) for r in records}
        ):
            interactions, impressions = split_user_records(records, topics)
            done: list[Effects] = []
            if interactions:
                done.append(await runtime.on_interactions(interactions))
            if impressions:
                done.append(await runtime.on_impressions(impressions))
            decoded = decoded_by_position(done)  # decoded once, for every step of the batch
            if bandit is not None:
                await bandit.on_attribution(records, decoded)
            if drift is not None:
                await drift.on_user_records(records, done, decoded)

    async def on_outcomes(records: Sequence[SourceRecord]) -> None:
        if bandit is not None:
            await bandit.on_outcomes(records)
        if drift is not None:
            await drift.on_outcome_records(records)

    if bandit is not None:  # the idleness rule judges only the partitions this worker owns
        bandit.assigned_partitions = lambda: {
            tp.partition for tp in app.consumer.assignment() if tp.topic == topics.events
        }

    # Only the agents fed by other agents' forwards linger (``streams.batching``).
    linger_s = settings.stream.linger_s
    agents: list[tuple[str, tuple[str, ...], Callable[..., Awaitable[Any]], float]] = [
        ("interactions", (topics.events, topics.privacy, topics.impressions), on_users, 0.0),
        ("catalog", (topics.items,), runtime.on_catalog, 0.0),
        ("item_features", (topics.item_updates,), runtime.on_item_updates, linger_s),
    ]
    if bandit is not None:
        agents.append(("bandit_posteriors", (topics.bandit_outcomes,), on_outcomes, linger_s))
    for name, names, handle, linger in agents:
        app.agent(raw_topic(app, *names), name=name)(batched(name, handle, linger))

    @app.timer(interval=1.0)
    async def export_lag() -> None:
        export_lag_gauges(lag, app.consumer.assignment())

    @app.timer(interval=settings.stream.offline_flush_s)
    async def flush_offline() -> None:  # the batches' offline rows into parquet (streams.sinks)
        await runtime.flush_offline()

    return app


def export_lag_gauges(lag: LagTracker, assignment: Iterable[TP]) -> None:
    """The consumer lag gauges of every topic this worker holds partitions of."""
    owned = ((tp.topic, tp.partition) for tp in assignment)
    for topic, (records, seconds) in lag.by_topic(owned).items():
        worker_metrics.CONSUMER_LAG_RECORDS.labels(topic).set(records)
        worker_metrics.CONSUMER_LAG_SECONDS.labels(topic).set(seconds)


def create_floor_app(settings: Settings) -> faust.App:
    """A worker that only consumes ``<ns>.events`` in batches and counts them (``applied``).

    Same app settings, consumer and ``take_available`` batching as ``create_app``, no decoding,
    state or output: ``aether bench ingest --faust-floor`` measures Faust's own cost per event
    with it, the floor under what the real agents can reach.
    """
    app = _faust_app(settings)
    topic = settings.topic("events")
    source = raw_topic(app, topic)
    batch_size = settings.stream.batch_size
    within = settings.stream.batch_timeout_s
    catch_up = catch_up_of(settings)

    async def floor(stream: faust.StreamT[Any]) -> None:
        async for events in take_available(stream, batch_size, within, catch_up=catch_up):
            with timed("floor"):
                records = [_record(event) for event in events]
            worker_metrics.EVENTS.labels(topic, "applied").inc(len(records))

    app.agent(source, name="floor")(floor)
    return app


def catch_up_of(settings: Settings) -> CatchUp:
    stream = settings.stream
    return CatchUp(max_size=stream.catch_up_batch_size, lag_s=stream.catch_up_lag_s)


def _record(event: faust.EventT[Any]) -> SourceRecord:
    message = event.message
    value = message.value if isinstance(message.value, bytes) else bytes(message.value or b"")
    key = message.key if isinstance(message.key, bytes | None) else bytes(message.key)
    stamp = message.timestamp  # seconds, from the broker's record
    timestamp_ms = int(stamp * 1000) if stamp else None
    return SourceRecord(message.topic, message.partition, message.offset, value, key, timestamp_ms)
