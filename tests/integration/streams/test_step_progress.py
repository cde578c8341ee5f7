"""``StepProgress`` on a real broker and Redis: a step is behind by the records between the
offsets it committed with its state and the topic's ends (what ``aether bench ingest`` waits on)."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from core.settings import Settings
from streams.progress import StepProgress, group_offsets
from streams.state_port import StateCommit
from streams.statestore import RedisStateStore
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration


def test_a_step_is_behind_by_what_it_has_not_committed_on_each_partition(
    settings: Settings,
) -> None:
    events = ensure_topics(settings).events
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for partition, count in ((0, 5), (1, 3)):
        for n in range(count):
            producer.produce(events, value=b"{}", key=f"u{n}".encode(), partition=partition)
    assert producer.flush(15) == 0
    store = RedisStateStore(settings.redis, settings.deployment)
    progress = StepProgress(settings)
    try:
        # Each partition's records went out as one batch: Tansu 0.6's ListOffsets answers 1 for
        # them (the batch's base offset + 1); the ends come from the fetch (``end_offsets``).
        ends = progress.ends(events)
        assert group_offsets(settings, [events]) == (0, 8)
        assert ends == {
            (events, p): {0: 5, 1: 3}.get(p, 0) for p in range(settings.kafka.partitions)
        }
        assert progress.behind("interactions", ends) == 8  # nothing committed yet

        store.commit(StateCommit(offsets={"interactions": {(events, 0): 5, (events, 1): 2}}))
        assert progress.behind("interactions", ends) == 1  # the last record of partition 1
        assert progress.behind("drift", ends) == 8  # each step commits on its own

        store.commit(StateCommit(offsets={"interactions": {(events, 1): 3}}))
        assert progress.behind("interactions", ends) == 0
        assert progress.ends(settings.topic("no-such-topic")) == {}
    finally:
        progress.close()
        store.close()
