"""The logged-traffic reader against a real broker and a real offline log."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from core.errors import NotFoundError
from core.settings import Settings
from events import Impression, ImpressionItem, Interaction, encode
from features.offline import OfflineEventLog
from features.traffic_log import read_topic, read_traffic

T0 = 1_750_000_000_000


def click(n: int, request_id: str | None = None) -> Interaction:
    return Interaction(
        event_id=f"e{n}",
        event_type="click" if n % 3 else "dismiss",
        user_id=f"u{n % 17}",
        item_id=f"i{n % 5}",
        event_time=T0 + n,
        request_id=request_id,
        context={"surface": "home"},
    )


def slate(n: int) -> Impression:
    return Impression(
        event_time=T0 + n,
        request_id=f"r{n}",
        user_id=f"u{n % 17}",
        items=(ImpressionItem(item_id="i1", position=0, score=1.0, source="ann", propensity=0.5),),
        model_version="m1",
        experiment_arm="ranker=a",
    )


@pytest.mark.integration
def test_every_record_of_every_partition_is_read_across_batches(
    settings: Settings, make_topics
) -> None:
    make_topics(settings)
    topic = settings.topic("events")
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "linger.ms": 5})
    sent = [click(n) for n in range(700)]
    for n, event in enumerate(sent):
        if n in (250, 500):  # several record batches per partition
            producer.flush(10)
        producer.produce(topic, key=event.user_id.encode(), value=encode(event))
    producer.produce(topic, key=b"u1", value=b"{not json")
    assert producer.flush(30) == 0

    read = read_topic(settings.kafka.bootstrap_servers, topic, Interaction, timeout_s=60)

    assert sorted(e.event_id for e in read.records) == sorted(e.event_id for e in sent)
    assert read.skipped == 1
    assert {e.event_id: e for e in read.records}["e5"] == sent[5]


@pytest.mark.integration
def test_a_missing_topic_is_a_clear_error(settings: Settings, make_topics) -> None:
    make_topics(settings)
    with pytest.raises(NotFoundError):
        read_topic(settings.kafka.bootstrap_servers, settings.topic("nope"), Interaction)


@pytest.mark.integration
def test_offline_source_reads_events_from_the_offline_log_and_slates_from_kafka(
    settings: Settings, make_topics
) -> None:
    make_topics(settings)
    events = [click(n, request_id=f"r{n}") for n in range(40)]
    OfflineEventLog(settings.deployment).append(events)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    slates = [slate(n) for n in range(10)]
    for impression in slates:
        producer.produce(
            settings.topic("impressions"), key=impression.user_id.encode(), value=encode(impression)
        )
    assert producer.flush(30) == 0

    traffic = read_traffic(settings, "offline", timeout_s=60)

    assert sorted(traffic.interactions, key=lambda e: e.event_time_ms) == events
    assert sorted(i.request_id for i in traffic.impressions) == sorted(s.request_id for s in slates)
    assert traffic.source in ("offline", "offline events, kafka impressions")
