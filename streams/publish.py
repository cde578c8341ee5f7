"""Publish pre-encoded messages to a topic, optionally paced by event time (replays, benchmarks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from confluent_kafka import KafkaException, Producer
from tqdm import tqdm

from core.errors import DependencyUnavailable
from core.settings import Settings
from interactions.replay import ReplayMessage
from streams.handlers import Forward

# "murmur2_random" is what Java clients and kafkajs do (murmur2 of the key, random for a null
# key), so records of one key land on one partition whoever produced them.
DEFAULT_PARTITIONER = "murmur2_random"


def new_producer(
    bootstrap_servers: str, *, partitioner: str = DEFAULT_PARTITIONER, **config: object
) -> Producer:
    """The one place the project builds a Kafka producer (issue 21): every producer it owns
    (replay, worker outputs, serving's impressions, the demo, the stack's probe) partitions
    keys the same way, set by ``settings.stream.producer_partitioner``. librdkafka's own default
    (``consistent_random``, CRC32) would put a user's impressions on another partition than the
    same user's events from a Java or kafkajs client."""
    return Producer({"bootstrap.servers": bootstrap_servers, **config, "partitioner": partitioner})


def producer_for(settings: Settings, **config: object) -> Producer:
    """``new_producer`` for the deployment's broker and partitioner."""
    return new_producer(
        settings.kafka.bootstrap_servers,
        partitioner=settings.stream.producer_partitioner,
        **config,
    )


def make_producer(bootstrap_servers: str, **extra: object) -> Producer:
    """A bulk producer (replays, benchmarks): large local queue, short linger. ``extra`` may
    set any librdkafka option, ``partitioner`` included."""
    config: dict[str, object] = {
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
        "compression.type": "none",
    }
    config.update(extra)
    partitioner = str(config.pop("partitioner", DEFAULT_PARTITIONER))
    return new_producer(bootstrap_servers, partitioner=partitioner, **config)


def output_producer(
    bootstrap_servers: str, max_event_bytes: int, *, partitioner: str = DEFAULT_PARTITIONER
) -> Producer:
    """The worker's producer for its outputs (item updates, dead letters, late events, outcomes).

    ``linger.ms`` 2: outputs are flushed per batch anyway; idempotence off (re-deliveries are
    de-duplicated downstream, by source offset or id); room for a dead letter that wraps a
    maximal event.
    """
    return new_producer(
        bootstrap_servers,
        partitioner=partitioner,
        **{
            "linger.ms": 2,
            "enable.idempotence": False,
            "message.max.bytes": 4 * max_event_bytes + 65536,
        },
    )


def produce_waiting(
    producer: Producer, topic: str, value: bytes, key: bytes | None, partition: int | None = None
) -> None:
    """Produce (to ``partition`` if given, else where the partitioner puts ``key``), waiting
    for deliveries to drain while the local queue is full."""
    while True:
        try:
            if partition is None:
                producer.produce(topic, value=value, key=key)
            else:
                producer.produce(topic, value=value, key=key, partition=partition)
            return
        except BufferError:
            producer.poll(0.05)


def produce_forwards(producer: Producer, topic: str, forwards: Iterable[Forward]) -> None:
    """Produce each grouped message (item updates, outcomes) to the partition its records'
    keys belong on (``streams.partitioning``)."""
    for forward in forwards:
        produce_waiting(producer, topic, forward.payload, None, forward.partition)


async def flush_or_raise(producer: Producer, what: str, timeout_s: float = 30.0) -> None:
    """Wait (off the event loop) until every queued message is acknowledged."""
    loop = asyncio.get_running_loop()
    remaining = await loop.run_in_executor(None, producer.flush, timeout_s)
    if remaining:
        raise DependencyUnavailable("kafka", f"{remaining} {what} not acknowledged")


def publish(
    producer: Producer,
    topic: str,
    messages: Iterable[ReplayMessage],
    *,
    speed: float = 0.0,
    total: int | None = None,
    progress: bool = True,
    description: str = "",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Produce every message; with ``speed > 0``, event-time gaps are replayed ``speed`` × faster.

    Returns the number of messages produced (all acknowledged by the broker).
    """
    count = 0
    first_event_ms: int | None = None
    started = clock()
    bar = tqdm(total=total, desc=description or topic, unit="ev", disable=not progress)
    try:
        for message in messages:
            if speed > 0:
                if first_event_ms is None:
                    first_event_ms = message.event_time_ms
                due = started + (message.event_time_ms - first_event_ms) / 1000 / speed
                wait = due - clock()
                if wait > 0:
                    producer.poll(0)
                    sleep(wait)
            while True:
                try:
                    producer.produce(topic, value=message.value, key=message.key)
                    break
                except BufferError:  # local queue full: serve deliveries, then retry
                    producer.poll(0.01)
            count += 1
            if count % 10_000 == 0:
                producer.poll(0)
                bar.update(10_000)
        bar.update(count % 10_000)
        remaining = producer.flush(60)
    except KafkaException as exc:
        raise DependencyUnavailable("kafka", f"cannot publish to {topic}: {exc}") from exc
    finally:
        bar.close()
    if remaining:
        raise DependencyUnavailable("kafka", f"{remaining} messages to {topic} not acknowledged")
    return count
