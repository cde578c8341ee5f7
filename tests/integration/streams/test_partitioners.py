"""Attribution with any producer's partitioner (issue 21, item 1).

Serving's impressions are produced with murmur2 (``streams.publish.new_producer``); the same
clicks are produced by three clients that partition differently — murmur2 (Java, kafkajs),
librdkafka's default ``consistent_random`` (CRC32) and ``random`` — each into its own namespace.
The worker re-routes records off their key's partition (``streams.routing``), so every
namespace must end with the same, non-empty posteriors.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import Producer
from streams_harness import T0, consumed, read_topic, wait_for

from core.settings import Settings
from streams.partitioning import partition_for_key
from streams.publish import new_producer
from streams.testing import interaction
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration

USERS = [f"user-{n}" for n in range(12)]
WINDOW_MS = 30 * 60 * 1000  # the default attribution window
TOPICS = ("events", "impressions", "bandit-outcomes")


def _slates() -> list[tuple[bytes, bytes]]:
    out = []
    for n, user in enumerate(USERS):
        body = {
            "request_id": f"req-{n}",
            "user_id": user,
            "event_time": T0 + n,
            "model_version": "m",
            "items": [
                {
                    "item_id": f"i{n % 3}",
                    "position": 0,
                    "score": 1.0,
                    "source": "ann",
                    "propensity": 0.5,
                },
                {"item_id": "i9", "position": 1, "score": 0.5, "source": "ann", "propensity": 0.5},
            ],
        }
        out.append((user.encode(), orjson.dumps(body)))
    return out


def _clicks() -> list[tuple[bytes, bytes]]:
    """A click on the first item for two users in three."""
    events = [
        interaction(f"c-{n}", user, f"i{n % 3}", "click", T0 + 1_000 + n)
        for n, user in enumerate(USERS)
        if n % 3
    ]
    return [(str(e["user_id"]).encode(), orjson.dumps(e)) for e in events]


def _closing() -> list[tuple[bytes, bytes]]:
    """One event per user after the window, sent once the clicks are consumed (as in real time:
    a re-routed record is judged for lateness on its user's partition), so every partition's
    watermark passes every slate's window."""
    events = [
        interaction(f"z-{n}", user, "i7", "view", T0 + WINDOW_MS + 120_000 + n)
        for n, user in enumerate(USERS)
    ]
    return [(str(e["user_id"]).encode(), orjson.dumps(e)) for e in events]


def _send(producer: Producer, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    for key, value in messages:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def _posteriors(settings: Settings) -> dict[str, Any]:
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    try:
        prefix = settings.redis_key("bandit", "posterior") + ":"
        return {
            key.decode()[len(prefix) :]: client.hgetall(key)
            for key in client.scan_iter(f"{prefix}*")
        }
    finally:
        client.close()


def _settled(settings: Settings) -> dict[str, Any]:
    wait_for(lambda: consumed(settings, TOPICS), timeout_s=120, what=settings.namespace)
    before = _posteriors(settings)
    while True:
        time.sleep(2)
        after = _posteriors(settings)
        if after == before and consumed(settings, TOPICS):
            return after
        before = after


def test_posteriors_do_not_depend_on_the_producers_partitioner(
    settings: Settings, start_worker
) -> None:
    from stack.redis_server import delete_namespace_keys

    partitions = settings.kafka.partitions
    spaces = {
        partitioner: Settings(
            namespace=f"{settings.namespace}{tag}",
            data_dir=settings.data_dir,
            KAFKA_BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
            REDIS_URL=settings.redis.url.get_secret_value(),
        )
        for tag, partitioner in (
            ("m", "murmur2_random"),
            ("c", "consistent_random"),
            ("r", "random"),
        )
    }
    try:
        for partitioner, space in spaces.items():
            ensure_topics(space)
            _send(
                new_producer(space.kafka.bootstrap_servers), space.topic("impressions"), _slates()
            )
            clients = Producer(
                {"bootstrap.servers": space.kafka.bootstrap_servers, "partitioner": partitioner}
            )
            _send(clients, space.topic("events"), _clicks())
        # Before any worker runs (it re-routes): the murmur2 producer agrees with our murmur2,
        # and the others did put records on partitions that are not their user's.
        for partitioner, space in spaces.items():
            sent = read_topic(space, "events", len(_clicks()))
            off = [m for m in sent if m.partition() != partition_for_key(m.key(), partitions)]
            if partitioner == "murmur2_random":
                assert not off
            else:
                assert off, f"{partitioner} put every record on its murmur2 partition"
        for space in spaces.values():
            start_worker(space)
        for partitioner, space in spaces.items():
            wait_for(lambda s=space: consumed(s, TOPICS), timeout_s=120, what="clicks consumed")
            clients = Producer(
                {"bootstrap.servers": space.kafka.bootstrap_servers, "partitioner": partitioner}
            )
            _send(clients, space.topic("events"), _closing())
        results = {partitioner: _settled(space) for partitioner, space in spaces.items()}
        reference = results["murmur2_random"]
        assert reference, "no posterior was written"
        assert results["consistent_random"] == reference
        assert results["random"] == reference
    finally:
        for space in spaces.values():
            delete_namespace_keys(space.redis.url.get_secret_value(), space.namespace)
