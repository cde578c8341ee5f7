"""Closing the Kafka impression log: what was queued is delivered, then the producer is gone; with
the broker gone, close returns at once and counts what it dropped (no producer left reconnecting)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer

from core.settings import Settings
from serving.domain import RecommendationQuery, Slate, SlateItem
from serving.impressions import KafkaImpressionLog, impression_of
from serving.server_metrics import IMPRESSIONS_FAILED

pytestmark = pytest.mark.integration


def _impression(n: int):
    slate = Slate(
        request_id=f"r{n}",
        items=(SlateItem("i1", 1.0, "popular", "", 1.0),),
        model_version="m",
        fallback=False,
    )
    return impression_of(
        RecommendationQuery(user_id=f"u{n}", k=1), slate, at_ms=1_700_000_000_000 + n
    )


def test_close_delivers_what_was_queued_then_refuses_more(settings, make_topics) -> None:
    make_topics(settings)
    log = KafkaImpressionLog(settings)
    for n in range(20):
        log.publish(_impression(n))
    log.close(10.0)
    with pytest.raises(RuntimeError):  # the producer is closed, not left running
        log.publish(_impression(99))
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"{settings.namespace}-check",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topic("impressions")])
    received, deadline = 0, time.monotonic() + 60
    while received < 20 and time.monotonic() < deadline:
        received += sum(1 for m in consumer.consume(20, timeout=1.0) if m.error() is None)
    consumer.close()
    assert received == 20


def test_close_with_the_broker_gone_drops_and_counts(settings) -> None:
    gone = Settings(
        namespace=settings.namespace,
        data_dir=settings.data_dir,
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        REDIS_URL=settings.redis.url.get_secret_value(),
        MILVUS_URI=settings.milvus.uri,
    )
    log = KafkaImpressionLog(gone)
    purged = IMPRESSIONS_FAILED.labels(reason="purged")
    before = purged._value.get()
    for n in range(5):
        log.publish(_impression(n))
    log.close(0.5)
    # dropped at close, not waited out: those would fail after message.timeout.ms as "delivery"
    assert purged._value.get() - before == 5
