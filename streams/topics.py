"""Topic names of the worker, all derived from the namespace, and their creation.

Source topics (public contracts, docs/architecture.md): ``events`` (key user_id), ``items`` (key item_id),
``impressions`` (key user_id), ``privacy`` (key user_id). Outputs: ``dead-letters`` and
``late-events``, and ``drift`` (detections of the worker's drift monitors). Internal: ``item-updates``, the repartition topic that re-keys every item input
by ``item_id``, and ``bandit-outcomes``, attributed rewards re-keyed by ``item_id``.

Every topic gets ``settings.kafka.partitions`` partitions: Faust assigns partition *p* of all
equally partitioned topics to the same worker, which the per-user joins rely on (events with
privacy requests, impressions with rewards).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import DependencyUnavailable
from core.settings import Settings


@dataclass(frozen=True, slots=True)
class TopicNames:
    events: str
    items: str
    impressions: str
    dead_letters: str
    late_events: str
    item_updates: str
    privacy: str
    bandit_outcomes: str
    drift: str  # drift detections (events.models.DriftDetection), key = signal

    @classmethod
    def for_settings(cls, settings: Settings) -> TopicNames:
        return cls(
            events=settings.topic("events"),
            items=settings.topic("items"),
            impressions=settings.topic("impressions"),
            dead_letters=settings.topic("dead-letters"),
            late_events=settings.topic("late-events"),
            item_updates=settings.topic("item-updates"),
            privacy=settings.topic("privacy"),
            bandit_outcomes=settings.topic("bandit-outcomes"),
            drift=settings.topic("drift"),
        )

    def all(self) -> tuple[str, ...]:
        return (
            self.events,
            self.items,
            self.impressions,
            self.dead_letters,
            self.late_events,
            self.item_updates,
            self.privacy,
            self.bandit_outcomes,
            self.drift,
        )


def ensure_topics(settings: Settings, timeout_s: float = 15.0) -> TopicNames:
    """Create the worker's topics if missing (idempotent), with ``settings.kafka.partitions``."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    names = TopicNames.for_settings(settings)
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise DependencyUnavailable("kafka", str(exc)) from exc
    missing = [n for n in names.all() if n not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(n, settings.kafka.partitions, 1) for n in missing],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise DependencyUnavailable("kafka", f"cannot create {name}: {exc}") from exc
    return names
