"""Drift detection in the real worker (a child process on the real broker and Redis), killed with
SIGKILL half-way: the detections it publishes on ``<ns>.drift`` are exactly those of one
uninterrupted pure run of the same monitors over the same records (``streams.drift_steps``) —
event-time correct across a crash, re-delivery and duplicates — and they include the injected
shift of the ranker's top score."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from streams_harness import T0, produce, wait_for

from bandits import configs_from_settings
from core.settings import Settings
from events import decode
from events.models import DriftDetection
from features.transition_store import stream_slot
from streams.drift_steps import DriftConfig, DriftSteps
from streams.handlers import SourceRecord
from streams.state_port import InMemoryStateStore
from streams.steps import lateness_policy
from streams.topics import TopicNames

pytestmark = pytest.mark.integration

SLATES = 2_400
SHIFT_AT = 1_200  # the ranker's top score moves up from this slate on
PIPELINE = {"consumer_lag_seconds", "freshness_seconds", "dead_letter_rate"}  # process readings


def slates() -> list[tuple[bytes, bytes]]:
    rng = random.Random(11)
    out = []
    for k in range(SLATES):
        score = rng.gauss(0.5 + (0.3 if k >= SHIFT_AT else 0.0), 0.05)
        slate = {
            "request_id": f"r{k}",
            "user_id": f"u{k % 40}",
            "items": [
                {
                    "item_id": f"i{k % 97}",
                    "position": 0,
                    "score": score,
                    "source": "ann",
                    "propensity": 1.0,
                },
                {
                    "item_id": f"i{k % 89}",
                    "position": 1,
                    "score": score - 0.1,
                    "source": "popular",
                    "propensity": 1.0,
                },
            ],
            "model_version": "m@1",
            "event_time": T0 + 100 * k,
        }
        out.append((f"u{k % 40}".encode(), orjson.dumps(slate)))
    return out


def drift_offsets(settings: Settings, client: redis.Redis) -> int:
    """Impressions the worker's drift monitors have committed, over all partitions."""
    key = f"{stream_slot(settings.namespace)}:stream:offsets"
    topic = settings.topic("impressions")
    fields = client.hgetall(key)
    return sum(int(v) for f, v in fields.items() if f.decode().startswith(f"drift|{topic}|"))


def read_all(settings: Settings, topic: str, count: int | None = None) -> list[Any]:
    """``count`` messages of every partition, or (``None``) all there are: until 3 s bring none."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": "drift-reader",
            "enable.auto.commit": False,
        }
    )
    try:
        name = settings.topic(topic)
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in partitions])
        seen: list[Any] = []
        quiet_since = time.monotonic()
        while (len(seen) < count) if count is not None else time.monotonic() - quiet_since < 3:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                seen.append(message)
                quiet_since = time.monotonic()
        return seen
    finally:
        consumer.close()


def reference(settings: Settings) -> list[DriftDetection]:
    """One uninterrupted in-memory run over the impressions as the broker holds them."""
    attribution, _ = configs_from_settings(settings)
    config = DriftConfig.for_stream(
        TopicNames.for_settings(settings),
        lateness_policy(settings.stream),
        attribution_window_ms=attribution.window_ms,
        attribution_lateness_ms=attribution.allowed_lateness_ms,
    )
    records = [
        SourceRecord(m.topic(), m.partition(), m.offset(), m.value(), m.key())
        for m in read_all(settings, "impressions", SLATES + 100)
    ]
    effects = DriftSteps(config).user_records(InMemoryStateStore(), records, now_ms=None)
    return effects.detections


def test_detections_survive_a_kill_9_and_equal_an_uninterrupted_run(
    settings: Settings, start_worker
) -> None:
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    messages = slates()
    worker = start_worker(settings)
    produce(settings, "impressions", messages[:SHIFT_AT] + messages[:100])  # 100 duplicates
    wait_for(lambda: drift_offsets(settings, client) >= SHIFT_AT + 100, what="first half")
    produce(settings, "impressions", messages[SHIFT_AT:])
    wait_for(lambda: drift_offsets(settings, client) > SHIFT_AT + 150, what="second half starts")
    worker.kill9()
    start_worker(settings)
    wait_for(lambda: drift_offsets(settings, client) >= SLATES + 100, timeout_s=180, what="all")

    published = {}
    for message in read_all(settings, "drift"):
        detection = decode(message.value(), DriftDetection)
        if detection.signal not in PIPELINE:
            published[detection.detection_id] = detection
    expected = {d.detection_id: d for d in reference(settings) if d.signal not in PIPELINE}
    assert set(published) == set(expected), (
        sorted(d.signal for d in published.values()),
        sorted(d.signal for d in expected.values()),
    )
    shifts = [d for d in expected.values() if d.signal == "top_score"]
    assert shifts and all(d.statistic > d.reference for d in shifts)
    assert min(d.event_time_ms for d in shifts) >= T0 + 100 * SHIFT_AT
