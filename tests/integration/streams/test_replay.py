"""``aether replay`` publishes the catalogue and the mapped rating events onto the real broker."""

from __future__ import annotations

import argparse

import orjson
import pytest
from streams_harness import read_topic

from aether.cli import replay
from core.settings import Settings

pytestmark = pytest.mark.integration


def test_replay_publishes_catalog_then_events_in_event_time_order(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers)
    args = argparse.Namespace(
        dataset="ml-latest-small",
        data=None,
        speed=0.0,
        limit=100,
        namespace=settings.namespace,
        no_catalog=False,
    )
    assert replay.run(args) == 0
    events = [orjson.loads(m.value()) for m in read_topic(settings, "events", 200)]
    assert len(events) >= 200 and {e["event_type"] for e in events} >= {"view", "rating"}
    by_partition: dict[int, list[int]] = {}
    for message in read_topic(settings, "events", 200):
        by_partition.setdefault(message.partition(), []).append(
            orjson.loads(message.value())["event_time"]
        )
    assert all(times == sorted(times) for times in by_partition.values())
    assert read_topic(settings, "items", 1)
