"""Reads the system's logged traffic — served slates and user events — for off-line analysis.

What ``aether experiments report`` and ``aether ope --from-log`` read. Two sources:

* **Kafka**: ``<ns>.impressions`` and ``<ns>.events`` from their beginning to their end (each
  partition read until the consumer reports its end). One confluent-kafka consumer with explicit
  partition assignment: no consumer group is joined (seconds on Tansu: `aether stack up --probe`)
  and nothing is committed, so a read-out never disturbs the worker's groups. ``group.id`` is set
  only because librdkafka requires one.
* **The offline log** (``features.offline``): every valid interaction the worker wrote, and every
  slate it admitted (``features.offline_impressions.OfflineImpressionLog``). A deployment whose
  worker predates the impression log has none: ``read_offline_impressions`` then returns
  ``None`` and ``read_traffic`` reads the impressions from Kafka (and says so in ``source``).

A record that does not decode is skipped and counted (the worker dead-letters such events; an
analysis should not crash on one). Records come back in log order; the analysis orders them by
event time itself.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from core.errors import DependencyUnavailable, NotFoundError, SchemaError
from core.settings import Deployment, Settings
from events.codec import decode
from events.models import Impression, Interaction

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class TopicRead(Generic[M]):
    records: list[M]
    skipped: int  # records that did not decode


@dataclass(frozen=True)
class LoggedTraffic:
    impressions: list[Impression]
    interactions: list[Interaction]
    skipped: int
    source: str  # "kafka" or "offline"


def read_topic(
    bootstrap_servers: str, topic: str, model: type[M], *, timeout_s: float = 60.0
) -> TopicRead[M]:
    """Every record of ``topic``, from the beginning of each partition to its end.

    The end is the fetcher's end-of-partition signal, not ``get_watermark_offsets``: Tansu 0.6
    answers ListOffsets(latest) with the base offset of the partition's last record *batch* plus
    one (e.g. 107 for a partition holding 287 records in batches), while the high watermark in
    its fetch responses is right (tested in ``tests/integration/experiments``).
    """
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

    consumer = _consumer(bootstrap_servers, topic)
    try:
        try:
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        except KafkaException as exc:
            raise DependencyUnavailable("kafka", f"{bootstrap_servers}: {exc}") from exc
        if meta is None or meta.error is not None or not meta.partitions:
            raise NotFoundError(f"topic {topic!r} does not exist on {bootstrap_servers}")
        remaining = set(meta.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(remaining)])
        records: list[M] = []
        skipped = 0
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise DependencyUnavailable(
                    "kafka", f"{topic}: not read to its end within {timeout_s:.0f} s"
                )
            for message in consumer.consume(10_000, timeout=1.0):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(message.partition())
                        continue
                    raise DependencyUnavailable("kafka", f"{topic}: {error}")
                if message.partition() not in remaining:
                    continue  # written after that partition was read to its end
                try:
                    records.append(decode(message.value() or b"", model))
                except SchemaError:
                    skipped += 1
        if skipped:
            log.warning("%s: %d record(s) did not decode and were skipped", topic, skipped)
        return TopicRead(records, skipped)
    finally:
        consumer.close()


def _consumer(bootstrap_servers: str, topic: str) -> Any:
    from confluent_kafka import Consumer

    return Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"{topic}-reader",  # required by librdkafka; never joined or committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,  # how the end of each partition is found
            "allow.auto.create.topics": False,
            "socket.timeout.ms": 10_000,
        }
    )


def read_kafka_traffic(settings: Settings, *, timeout_s: float = 60.0) -> LoggedTraffic:
    """Impressions and events of the settings' namespace, from Kafka."""
    servers = settings.kafka.bootstrap_servers
    impressions = read_topic(
        servers, settings.topic("impressions"), Impression, timeout_s=timeout_s
    )
    events = read_topic(servers, settings.topic("events"), Interaction, timeout_s=timeout_s)
    return LoggedTraffic(
        impressions.records, events.records, impressions.skipped + events.skipped, "kafka"
    )


def read_offline_interactions(
    deployment: Deployment, event_types: Iterable[str] | None = None
) -> list[Interaction]:
    """The offline log's interactions (de-duplicated by ``event_id``), optionally of some types."""
    from features import offline  # Feast comes with it: imported only when the log is read

    frame = offline.OfflineEventLog(deployment).read()
    if event_types is not None:
        frame = frame[frame["event_type"].isin(list(event_types))]
    out = []
    for row in frame.itertuples(index=False):
        out.append(
            Interaction.model_validate(
                {
                    "event_id": row.event_id,
                    "event_type": row.event_type,
                    "user_id": row.user_id,
                    "item_id": row.item_id,
                    "event_time": int(row.event_time_ms),
                    "value": None if _missing(row.value) else float(row.value),
                    "request_id": None if _missing(row.request_id) else row.request_id,
                    "context": json.loads(row.context) if isinstance(row.context, str) else {},
                }
            )
        )
    return out


def read_offline_impressions(deployment: Deployment) -> list[Impression] | None:
    """The offline log's slates (one per request id), or ``None`` when it never logged one."""
    from features.offline_impressions import OfflineImpressionLog

    log = OfflineImpressionLog(deployment)
    return log.read_impressions() if log.exists() else None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


SOURCES = ("kafka", "offline")


def read_traffic(settings: Settings, source: str, *, timeout_s: float = 60.0) -> LoggedTraffic:
    """Impressions and events from ``source``: ``kafka``, or ``offline`` (both from the offline
    log; impressions from Kafka when the offline log has none, see the module docstring)."""
    if source == "kafka":
        return read_kafka_traffic(settings, timeout_s=timeout_s)
    if source != "offline":
        raise SchemaError(f"unknown traffic source {source!r}; choose one of {SOURCES}")
    interactions = read_offline_interactions(settings.deployment)
    impressions = read_offline_impressions(settings.deployment)
    if impressions is not None:
        return LoggedTraffic(impressions, interactions, 0, "offline")
    log.warning("the offline log holds no impressions: reading them from Kafka")
    read = read_topic(
        settings.kafka.bootstrap_servers,
        settings.topic("impressions"),
        Impression,
        timeout_s=timeout_s,
    )
    return LoggedTraffic(
        read.records, interactions, read.skipped, "offline events, kafka impressions"
    )
