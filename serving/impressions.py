"""Publishes one ``Impression`` per served slate to the impressions topic (key = user_id).

Publishing never fails a request: delivery errors are logged and counted, and the producer's
local queue absorbs broker hiccups (``queue.buffering.max.ms`` keeps the request path
non-blocking).
"""

from __future__ import annotations

import logging
from typing import Protocol

from confluent_kafka import KafkaException, Producer
from prometheus_client import Counter

from core.settings import Settings
from events import Impression, encode

log = logging.getLogger(__name__)

IMPRESSIONS_PUBLISHED = Counter(
    "aether_impressions_published_total", "Slates published to the impressions topic"
)
IMPRESSIONS_FAILED = Counter(
    "aether_impressions_failed_total", "Slates that could not be published", ["reason"]
)


class ImpressionLog(Protocol):
    def publish(self, impression: Impression) -> None: ...

    def flush(self, timeout_s: float = 5.0) -> int: ...


class KafkaImpressionLog:
    def __init__(self, settings: Settings) -> None:
        self._topic = settings.topic("impressions")
        self._producer = Producer(
            {
                "bootstrap.servers": settings.kafka.bootstrap_servers,
                "linger.ms": 5,
                "queue.buffering.max.messages": 100_000,
                "message.timeout.ms": 30_000,
                "client.id": f"{settings.namespace}-serving",
            }
        )

    def publish(self, impression: Impression) -> None:
        try:
            self._producer.produce(
                self._topic,
                key=impression.user_id.encode(),
                value=encode(impression),
                on_delivery=_on_delivery,
            )
        except (BufferError, KafkaException) as exc:
            IMPRESSIONS_FAILED.labels(reason=type(exc).__name__).inc()
            log.warning("impression %s not queued: %s", impression.request_id, exc)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 5.0) -> int:
        return int(self._producer.flush(timeout_s))


def _on_delivery(err: object, _msg: object) -> None:
    if err is None:
        IMPRESSIONS_PUBLISHED.inc()
    else:
        IMPRESSIONS_FAILED.labels(reason="delivery").inc()
        log.warning("impression delivery failed: %s", err)


class InMemoryImpressionLog:
    """Keeps published impressions in a list; for unit tests of the pipeline."""

    def __init__(self) -> None:
        self.published: list[Impression] = []

    def publish(self, impression: Impression) -> None:
        self.published.append(impression)

    def flush(self, timeout_s: float = 5.0) -> int:
        return 0
