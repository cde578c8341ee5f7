"""Publishes one ``Impression`` per served slate to the impressions topic (key = user_id).

Publishing never fails a request: delivery errors are logged and counted, and the producer's
local queue absorbs broker hiccups (``queue.buffering.max.ms`` keeps the request path
non-blocking). Delivered slates are counted by experiment arm
(``aether_impressions_published_total{arm}``, ``serving.server_metrics``).

Privacy: the slates of a user who opted out are served but not published
(:class:`WithholdingImpressionLog`, ``aether_impressions_withheld_total{reason}``): their events
are suppressed by the worker, so an impression would only carry their id into a topic. When the
worker's marker cannot be read the impression is withheld too (fail closed). A deleted user who
comes back is a new subject (``streams.privacy``): their later slates are published.
"""

from __future__ import annotations

import logging
from typing import Protocol

import redis
from confluent_kafka import KafkaError, KafkaException

from core.settings import Settings
from events import Impression, ImpressionItem, encode
from features.redis_client import RedisClient
from serving.domain import RecommendationQuery, Slate
from serving.interleaving import INTERLEAVING_CONTEXT_KEY, encode_teams
from serving.server_metrics import (
    IMPRESSIONS_FAILED,
    IMPRESSIONS_PUBLISHED,
    IMPRESSIONS_WITHHELD,
    arm_label,
)
from streams.privacy import decode_status
from streams.publish import producer_for
from streams.statestore import privacy_marker_key

log = logging.getLogger(__name__)


def impression_of(query: RecommendationQuery, slate: Slate, *, at_ms: int) -> Impression:
    """The impression of a served slate, ``at_ms`` its serving time (never a feature value)."""
    return Impression(
        event_time=at_ms,
        request_id=slate.request_id,
        user_id=query.user_id,
        items=tuple(
            ImpressionItem(
                item_id=item.item_id,
                position=position,
                score=item.score,
                source=item.source,
                propensity=item.propensity,
            )
            for position, item in enumerate(slate.items)
        ),
        model_version=slate.model_version,
        experiment_arm=slate.experiment_arm,
        fallback=slate.fallback,
        context=_impression_context(query, slate),
    )


def _impression_context(query: RecommendationQuery, slate: Slate) -> dict[str, str]:
    """The request context; for an interleaved slate also each position's team
    (``serving.interleaving.encode_teams``), so a click can be credited to its ranker."""
    if not any(item.team for item in slate.items):
        return query.context
    teams = encode_teams([item.team for item in slate.items])
    return {**query.context, INTERLEAVING_CONTEXT_KEY: teams}


class ImpressionLog(Protocol):
    def publish(self, impression: Impression) -> None: ...

    def flush(self, timeout_s: float = 5.0) -> int: ...


class KafkaImpressionLog:
    def __init__(self, settings: Settings) -> None:
        self._topic = settings.topic("impressions")
        self._producer = producer_for(
            settings,
            **{
                "linger.ms": 5,
                "queue.buffering.max.messages": 100_000,
                "message.timeout.ms": 30_000,
                "client.id": f"{settings.namespace}-serving",
            },
        )

    def publish(self, impression: Impression) -> None:
        try:
            self._producer.produce(
                self._topic,
                key=impression.user_id.encode(),
                value=encode(impression),
                on_delivery=_DeliveryReport(arm_label(impression.experiment_arm)),
            )
        except (BufferError, KafkaException) as exc:
            IMPRESSIONS_FAILED.labels(reason=type(exc).__name__).inc()
            log.warning("impression %s not queued: %s", impression.request_id, exc)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 5.0) -> int:
        return int(self._producer.flush(timeout_s))

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush, then stop the producer's threads: a producer left open until the process
        exits keeps reconnecting (and logging) once the broker is gone. What the flush could not
        deliver is dropped (counted as failed): ``close`` waits for every queued message."""
        left = self.flush(timeout_s)
        if left:  # their delivery reports count them (reason ``purged``)
            log.warning("%d impressions undelivered at close, dropped", left)
            self._producer.purge()
        self._producer.close()


class _DeliveryReport:
    """The producer's delivery callback of one slate: counts it under its arm."""

    __slots__ = ("_arm",)

    def __init__(self, arm: str) -> None:
        self._arm = arm

    def __call__(self, err: object, _msg: object) -> None:
        if err is None:
            IMPRESSIONS_PUBLISHED.labels(arm=self._arm).inc()
        elif getattr(err, "code", lambda: None)() == KafkaError._PURGE_QUEUE:
            IMPRESSIONS_FAILED.labels(reason="purged").inc()  # dropped at close, logged there
        else:
            IMPRESSIONS_FAILED.labels(reason="delivery").inc()
            log.warning("impression delivery failed: %s", err)


class WithholdingImpressionLog:
    """Publishes through ``inner``, except the slates of users whose privacy marker (written by
    the worker, ``streams.statestore.privacy_marker_key``) says they opted out."""

    def __init__(self, inner: ImpressionLog, client: RedisClient, namespace: str) -> None:
        self._inner, self._client, self._namespace = inner, client, namespace

    def publish(self, impression: Impression) -> None:
        reason = self._withheld(impression.user_id)
        if reason is None:
            self._inner.publish(impression)
        else:
            IMPRESSIONS_WITHHELD.labels(reason=reason).inc()

    def _withheld(self, user_id: str) -> str | None:
        try:
            raw = self._client.get(privacy_marker_key(self._namespace, user_id))
        except redis.RedisError as exc:
            log.warning("privacy marker unreadable, impression withheld: %s", exc)
            return "marker_unreadable"
        if raw is not None and decode_status(raw).opted_out:
            return "opted_out"
        return None

    def flush(self, timeout_s: float = 5.0) -> int:
        return self._inner.flush(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close(timeout_s)
        else:
            self._inner.flush(timeout_s)


class InMemoryImpressionLog:
    """Keeps published impressions in a list; for unit tests of the pipeline."""

    def __init__(self) -> None:
        self.published: list[Impression] = []

    def publish(self, impression: Impression) -> None:
        self.published.append(impression)

    def flush(self, timeout_s: float = 5.0) -> int:
        return 0
