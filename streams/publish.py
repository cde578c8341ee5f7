"""Publish pre-encoded messages to a topic, optionally paced by event time (replays, benchmarks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from confluent_kafka import KafkaException, Producer
from tqdm import tqdm

from core.errors import DependencyUnavailable
from interactions.replay import ReplayMessage


def make_producer(bootstrap_servers: str, **extra: object) -> Producer:
    config: dict[str, object] = {
        "bootstrap.servers": bootstrap_servers,
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
        "compression.type": "none",
        "partitioner": "murmur2_random",
    }
    config.update(extra)
    return Producer(config)


def output_producer(bootstrap_servers: str, max_event_bytes: int) -> Producer:
    """The worker's producer for its outputs (item updates, dead letters, late events, outcomes).

    ``linger.ms`` 2: outputs are flushed per batch anyway; idempotence off (re-deliveries are
    de-duplicated by id downstream); room for a dead letter that wraps a maximal event.
    """
    return Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "linger.ms": 2,
            "enable.idempotence": False,
            "partitioner": "murmur2_random",
            "message.max.bytes": 4 * max_event_bytes + 65536,
        }
    )


def produce_waiting(producer: Producer, topic: str, value: bytes, key: bytes | None) -> None:
    """Produce, waiting for deliveries to drain while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value=value, key=key)
            return
        except BufferError:
            producer.poll(0.05)


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
