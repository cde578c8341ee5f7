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

from core.errors import ConfigError, DependencyUnavailable
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


HOUR_MS = 3_600_000
ITEM_UPDATES_RETENTION_HOURS = 24  # the repartition hop: consumed within seconds


def topic_configs(names: TopicNames, user_data_retention_hours: int) -> dict[str, dict[str, str]]:
    """Each topic's creation config: a retention for every topic that holds user ids.

    ``events``, ``impressions``, ``privacy``, ``dead-letters`` and ``late-events`` carry user ids:
    ``user_data_retention_hours``. ``item-updates`` carries event ids and item ids on their way to
    the item features: a day. ``items`` (the catalogue) is compacted, newest update per item;
    ``bandit-outcomes`` (request|item ids, arms) and ``drift`` (signals) hold no user id and keep
    the broker's default.
    """
    user_data = {"retention.ms": str(user_data_retention_hours * HOUR_MS)}
    configs: dict[str, dict[str, str]] = {name: {} for name in names.all()}
    for name in (
        names.events,
        names.impressions,
        names.privacy,
        names.dead_letters,
        names.late_events,
    ):
        configs[name] = dict(user_data)
    configs[names.item_updates] = {"retention.ms": str(ITEM_UPDATES_RETENTION_HOURS * HOUR_MS)}
    configs[names.items] = {"cleanup.policy": "compact"}
    return configs


def ensure_topics(settings: Settings, timeout_s: float = 15.0) -> TopicNames:
    """Create the worker's topics if missing (idempotent), with ``settings.kafka.partitions`` and
    :func:`topic_configs` (topics that exist already are left as they are).

    A topic that exists with another partition count is a ``ConfigError``: the worker places
    records by that count (re-routed user records, item updates and outcomes grouped per
    partition, ``streams.partitioning``), so the two must agree."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    names = TopicNames.for_settings(settings)
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise DependencyUnavailable("kafka", str(exc)) from exc
    check_partition_counts(
        {n: len(existing[n].partitions) for n in names.all() if n in existing},
        settings.kafka.partitions,
    )
    missing = [n for n in names.all() if n not in existing]
    if missing:
        configs = topic_configs(names, settings.kafka.user_data_retention_hours)
        futures = admin.create_topics(
            [NewTopic(n, settings.kafka.partitions, 1, config=configs[n]) for n in missing],
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


def check_partition_counts(counts: dict[str, int], partitions: int) -> None:
    """Raise ``ConfigError`` naming the topics whose partition count is not ``partitions``."""
    wrong = {name: count for name, count in sorted(counts.items()) if count != partitions}
    if wrong:
        found = ", ".join(f"{name}: {count}" for name, count in wrong.items())
        raise ConfigError(
            f"topics exist with another partition count than AETHER_KAFKA__PARTITIONS="
            f"{partitions} ({found}); set it to theirs, or recreate the topics"
        )
