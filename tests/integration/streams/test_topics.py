"""``ensure_topics`` on a real broker: topics created once, a partition count that disagrees with
the settings refused (the worker places re-routed records, item updates and outcomes by it)."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.settings import Settings
from streams.topics import check_partition_counts, ensure_topics

pytestmark = pytest.mark.integration


def test_topics_of_another_partition_count_are_refused_with_their_names(
    settings: Settings,
) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    partitions = settings.kafka.partitions
    events = settings.topic("events")
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    admin.create_topics([NewTopic(events, partitions + 1, 1)])[events].result(timeout=15)
    with pytest.raises(ConfigError, match=rf"{events}: {partitions + 1}"):
        ensure_topics(settings)
    # The rest of the namespace's topics were not created: nothing half set up.
    listed = admin.list_topics(timeout=15).topics
    assert settings.topic("item-updates") not in listed


def test_topics_are_created_once_with_the_settings_partition_count(settings: Settings) -> None:
    names = ensure_topics(settings)
    assert ensure_topics(settings) == names  # idempotent, and the counts agree
    from confluent_kafka.admin import AdminClient

    listed = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers}).list_topics(
        timeout=15
    )
    counts = {n: len(listed.topics[n].partitions) for n in names.all()}
    assert set(counts.values()) == {settings.kafka.partitions}


def test_the_check_names_every_disagreeing_topic() -> None:
    check_partition_counts({"a": 4, "b": 4}, 4)
    with pytest.raises(ConfigError) as raised:
        check_partition_counts({"a": 4, "b": 2, "c": 8}, 4)
    assert "b: 2, c: 8" in str(raised.value) and "a:" not in str(raised.value)
