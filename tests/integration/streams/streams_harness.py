"""Helpers for the stream worker's integration tests: worker subprocesses, a producer, a
partition reader, a poller and the reference (uninterrupted, pure) run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from core.settings import Settings
from features.rows import ItemFeatureRow, UserFeatureRow
from features.transition_store import RETRACTED
from streams.publish import new_producer
from streams.testing import IMPRESSIONS, ITEMS, LocalPipeline, interaction, record

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_700_000_000_000
MONTH_MS = 30 * 86_400_000


class Worker:
    """``python -m aether.cli.worker`` for one namespace, as a child process we can kill -9."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "REDIS_URL": settings.redis.url.get_secret_value(),
            "AETHER_REDIS__CLUSTER": "true" if settings.redis.cluster else "false",
            "AETHER_NAMESPACE": settings.namespace,
            "AETHER_DATA_DIR": str(settings.data_dir),
            "AETHER_STREAM__BATCH_SIZE": "50",  # small batches: crashes land mid-stream
            # No MiniLM in these workers (seconds of CPU each): the catalogue agent's embedding
            # has its own test, test_catalogue_content.py.
            "AETHER_STREAM__EMBED_CATALOGUE": "false",
        }
        self.settings = settings
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aether.cli.worker"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill9(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self._log.close()

    def stop(self) -> bool:
        """SIGTERM; True when the worker then ended by itself (else it is killed after 20 s)."""
        graceful = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                graceful = False
                self.kill9()
        self._log.close()
        return graceful


@dataclass(frozen=True)
class Lane:
    """One test's share of the session's shared worker (fixture ``lane``): the worker's namespace,
    ids of its own (each starts with ``tag``) and event times from ``t0``, a month after the
    previous lane's (the worker's partitions keep their event-time watermarks between tests)."""

    settings: Settings
    tag: str
    t0: int

    def id(self, name: str) -> str:
        return f"{self.tag}{name}"


def produce(settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    # The project's producer (murmur2): records start on their key's partition. Other
    # partitioners are tested on purpose in test_partitioners.py.
    producer = new_producer(settings.kafka.bootstrap_servers, **{"linger.ms": 5})
    for key, value in messages:
        producer.produce(settings.topic(topic), key=key, value=value)
    assert producer.flush(30) == 0


def read_topic(
    settings: Settings,
    topic: str,
    count: int,
    timeout_s: float = 60,
    key_prefix: bytes = b"",
) -> list[Any]:
    """Read ``count`` messages from every partition of a topic (assign, no group join); only
    those whose key starts with ``key_prefix`` (a ``Lane``'s tag) count."""
    name = settings.topic(topic)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": "reader",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in partitions])
        seen: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(seen) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            if (message.key() or b"").startswith(key_prefix):
                seen.append(message)
        return seen
    finally:
        consumer.close()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def make_events(
    count: int, seed: int, users: int = 5, items: int = 8, *, tag: str = "", t0: int = T0
) -> list[dict[str, Any]]:
    """Events in event-time order from ``t0``, several types, dismissals included, a second
    apart; every id starts with ``tag`` (a ``Lane``'s)."""
    rng = random.Random(seed)
    kinds = ["view"] * 6 + ["click"] * 3 + ["rating", "add_to_cart", "purchase", "dismiss"]
    return [
        interaction(
            f"{tag}ev-{seed}-{n}",
            f"{tag}u{rng.randrange(users)}",
            f"{tag}i{rng.randrange(items)}",
            rng.choice(kinds),
            t0 + n * 1000,
        )
        for n in range(count)
    ]


def encoded(events: list[dict[str, Any]]) -> list[tuple[bytes | None, bytes]]:
    return [(str(e["user_id"]).encode(), orjson.dumps(e)) for e in events]


def reference(
    events: list[dict[str, Any]],
    catalog: Sequence[dict[str, Any]] = (),
    slates: Sequence[dict[str, Any]] = (),
) -> tuple[dict[str, UserFeatureRow], dict[str, ItemFeatureRow]]:
    """What an uninterrupted run must produce: the pure pipeline over the same set of events."""
    pipeline = LocalPipeline()
    pipeline.feed(record(e) for e in sorted(events, key=lambda e: e["event_time"]))
    pipeline.feed(record(c, topic=ITEMS) for c in catalog)
    pipeline.feed(record(s, topic=IMPRESSIONS) for s in slates)
    return pipeline.user_rows(), pipeline.item_rows()


def store_matches(
    store: Any, users: dict[str, UserFeatureRow], items: dict[str, ItemFeatureRow]
) -> bool:
    return store.read_users(sorted(users)) == users and store.read_items(sorted(items)) == items


def consumed(settings: Settings, topics: Sequence[str]) -> bool:
    """True when the worker's group has committed every partition of ``topics`` to its end and
    the worker has flushed its offline rows into parquet (``streams.sinks``)."""
    from streams.progress import group_offsets, offline_pending

    done, end = group_offsets(settings, [settings.topic(t) for t in topics])
    return done >= end and offline_pending(settings) == 0


def consumed_share(settings: Settings, topic: str) -> float:
    """The share of ``topic``'s records the worker's group has committed (0 before any)."""
    from streams.progress import group_offsets

    done, end = group_offsets(settings, [settings.topic(topic)])
    return done / end if end else 0.0


def reference_transitions(events: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Item transitions an uninterrupted in-order run adds (the pure pipeline's increments)."""
    pipeline = LocalPipeline()
    total: dict[tuple[str, str], float] = {}
    for event in sorted(events, key=lambda e: e["event_time"]):
        for pair, weight in pipeline.feed([record(event)]).transitions.items():
            total[pair] = total.get(pair, 0.0) + weight
    # As the store keeps them: a transition a dismissal retracted leaves no member.
    return {pair: weight for pair, weight in total.items() if weight > RETRACTED}


def stored_transitions(settings: Settings) -> dict[tuple[str, str], float]:
    """Every (anchor, item) weight in the namespace's transition store in Redis."""
    from stack.namespace_outputs import stored_transitions as stored

    return stored(settings)


def movielens_history(
    ratings: int, slate_every: int = 8
) -> tuple[list[tuple[bytes | None, bytes]], list[tuple[bytes | None, bytes]]]:
    """The first ``ratings`` MovieLens (``ml-latest-small``) ratings as events in event-time
    order, and a serving-style slate just before every ``slate_every``-th rating (its item and
    item "1"), so that attribution and the posteriors have work: ``(events, slates)`` as keyed
    messages."""
    from interactions.movielens import load_movielens
    from interactions.replay import rating_events

    rows = load_movielens("ml-latest-small").ratings.iloc[:ratings]
    events: list[tuple[bytes | None, bytes]] = [
        (m.key, m.value) for m in rating_events("ml-latest-small", rows)
    ]
    slates: list[tuple[bytes | None, bytes]] = []
    triples = rows[["user_id", "item_id", "timestamp_ms"]].itertuples(index=False)
    for n, (user, item, t) in enumerate(triples):
        if n % slate_every:
            continue
        body = {
            "request_id": f"req-{n}",
            "user_id": user,
            "event_time": int(t) - 1,
            "model_version": "m",
            "items": [
                {"item_id": item, "position": 0, "score": 1.0, "source": "ann", "propensity": 0.5},
                {"item_id": "1", "position": 1, "score": 0.5, "source": "ann", "propensity": 0.5},
            ],
        }
        slates.append((str(user).encode(), orjson.dumps(body)))
    return events, slates


def drained_outputs(
    settings: Settings,
    topics: Sequence[str],
    users: Sequence[str],
    items: Sequence[str],
    stall_s: float = 240,
) -> dict[str, Any]:
    """Every output of the namespace (``stack.namespace_outputs``) once the worker's group has
    consumed ``topics`` to their ends and nothing has changed for 3 s. Fails when the group has
    committed nothing for ``stall_s`` (a slow machine only makes the wait longer)."""
    from stack.namespace_outputs import namespace_outputs
    from streams.progress import wait_until_caught_up

    wait_until_caught_up(settings, stall_s, inputs=topics)
    before = namespace_outputs(settings, users, items)
    while True:
        time.sleep(3)
        after = namespace_outputs(settings, users, items)
        if after == before and consumed(settings, topics):
            return after
        before = after


def cluster_settings(settings: Settings, cluster_url: str, suffix: str = "c") -> Settings:
    """``settings`` moved to a namespace of its own (``<ns><suffix>``) on the Redis Cluster at
    ``cluster_url`` (``AETHER_REDIS__CLUSTER=true``): same broker and data folder."""
    from core.settings import RedisSettings

    return Settings(
        namespace=f"{settings.namespace}{suffix}",
        data_dir=settings.data_dir,
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
        REDIS_URL=cluster_url,
        redis=RedisSettings(cluster=True),
    )


def delete_namespace(settings: Settings) -> None:
    """Every Redis key of the namespace, on every master of a cluster."""
    from stack.redis_server import delete_namespace_keys

    url = settings.redis.url.get_secret_value()
    delete_namespace_keys(url, settings.namespace, cluster=settings.redis.cluster)
