"""Bandit outcomes count once whatever moment a worker dies at (issue 21, item 0).

Attribution commits a batch's outcomes, numbered per source partition, with its state (the
outbox), then produces them; a worker that rebuilds a state from the store produces its outbox
again first. The posteriors skip an outcome whose number they have applied. Before this, the
outcomes were produced and then the state committed; a worker killed in between decided the batch
again after its restart, and the posteriors skipped the outcomes only by id, remembered within
``BanditConfig.seen_margin_ms`` of the item's newest outcome, so in a replay (event time far
ahead within a batch) an outcome counted twice: the crash replay test
(``tests/integration/streams/test_crash_replay.py``) found one item's failure count doubled.

Here one batch decides two slates of the same item three days apart, so the older outcome's id is
forgotten as soon as the pair is applied, and a slate of an item on another partition, so the
batch's outcomes go out as two messages (``outcome_messages``: one per partition); the worker dies
at each point of its batch in turn.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from prometheus_client import REGISTRY

from core.settings import Settings
from streams.bandit_agent import BanditRuntime
from streams.bandit_steps import BanditConfig, BanditSteps
from streams.handlers import SourceRecord
from streams.partitioning import partition_for_key
from streams.state_port import InMemoryStateStore, StateCommit
from streams.testing import interaction
from streams.topics import TopicNames

T0 = 1_700_000_000_000
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
TOPICS = TopicNames.for_settings(Settings(namespace="unit"))
CONFIG = BanditConfig(TOPICS, partitions=4)
OTHER = "i3"  # on another partition of ``<ns>.bandit-outcomes`` than i1 (asserted below)


class Killed(Exception):
    """The worker died here."""


class Store(InMemoryStateStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail_commits = 0

    def commit(self, changes: StateCommit) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            raise Killed("before the commit")
        super().commit(changes)


class Producer:
    """Appends to ``log`` (the topic, shared by every worker); dies at its ``die_at``-th
    message."""

    def __init__(self, log: list[bytes], die_at: int | None = None) -> None:
        self.log, self.die_at, self.count = log, die_at, 0

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int = -1
    ) -> None:
        assert topic == TOPICS.bandit_outcomes
        if self.count == self.die_at:
            raise Killed(f"at outcome {self.count}")
        self.count += 1
        self.log.append(value)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def _worker(store: Store, log: list[bytes], die_at: int | None = None) -> BanditRuntime:
    return BanditRuntime(
        BanditSteps(CONFIG),
        state=store,
        producer=Producer(log, die_at),  # type: ignore[arg-type]
        now_ms=lambda: T0 + 10 * DAY_MS,
    )


def _slate(request_id: str, t: int, item: str = "i1") -> bytes:
    return orjson.dumps(
        {
            "request_id": request_id,
            "user_id": "u1",
            "event_time": t,
            "model_version": "m",
            "items": [
                {"item_id": item, "position": 0, "score": 1.0, "source": "ann", "propensity": 0.5}
            ],
        }
    )


def _view(event_id: str, t: int, offset: int) -> SourceRecord:
    value = orjson.dumps(interaction(event_id, "u1", "i2", "view", t))
    return SourceRecord(TOPICS.events, 0, offset, value, b"u1")


LATER = T0 + 3 * DAY_MS
# Two slates of item i1 three days apart, then a view that moves the events watermark past both
# windows: one batch decides both.
BATCH = [
    SourceRecord(TOPICS.impressions, 0, 0, _slate("r-old", T0), b"u1"),
    SourceRecord(TOPICS.impressions, 0, 1, _slate("r-new", LATER), b"u1"),
    SourceRecord(TOPICS.impressions, 0, 2, _slate("r-other", LATER, OTHER), b"u1"),
    _view("e1", LATER + 2 * HOUR_MS, 0),
]
# The partition's next batch: decides nothing new.
NEXT = [_view("e2", LATER + 3 * HOUR_MS, 1)]


def _posteriors(crash: str | None) -> tuple[dict[tuple[str, ...], dict[str, str]], int]:
    """The posterior hashes after ``BATCH`` and ``NEXT``, the first worker dying at ``crash``
    during ``BATCH`` and a fresh one taking over (Kafka delivers what was not committed again);
    and how many outcome messages were produced."""
    store, log = Store(), []
    die_at = {"at the first message": 0, "at the second message": 1}.get(crash or "")
    first = _worker(store, log, die_at)
    if crash == "before the commit":
        store.fail_commits = 1
    try:
        asyncio.run(first.on_attribution(BATCH))
    except Killed:
        first = _worker(store, log)  # the restart: nothing kept in memory
        asyncio.run(first.on_attribution(BATCH))  # delivered again (skipped if committed)
    if crash == "after the batch":  # everything done; the next worker starts from the store
        first = _worker(store, log)
    asyncio.run(first.on_attribution(NEXT))
    posteriors = _worker(store, [])
    for n, value in enumerate(log):  # one batch each: ids are forgotten between batches
        asyncio.run(posteriors.on_outcomes([SourceRecord(TOPICS.bandit_outcomes, 0, n, value)]))
    return store.posterior_hashes, len(log)


@pytest.mark.parametrize(
    ("crash", "messages"),
    [
        ("before the commit", 2),  # nothing went out: decided again, with the same numbers
        ("at the first message", 2),  # committed, nothing out: the outbox goes out
        ("at the second message", 3),  # one out, then the whole outbox again
        ("after the batch", 4),  # both out, then the outbox again
    ],
)
def test_outcomes_count_once_whenever_the_worker_dies(crash: str, messages: int) -> None:
    assert partition_for_key(b"i1", 4) != partition_for_key(OTHER.encode(), 4)
    expected, produced = _posteriors(None)
    assert expected and produced == 2  # three outcomes decided, two partitions: two messages
    again_before = _sent_again()
    got, produced_with_crash = _posteriors(crash)
    assert produced_with_crash == messages
    assert got == expected
    # the operator's view: the restarted worker re-sent the committed outbox (three outcomes)
    assert _sent_again() - again_before == (0 if crash == "before the commit" else 3)


def _sent_again() -> float:
    labels = {"topic": "bandit-attribution", "outcome": "outcome_again"}
    return REGISTRY.get_sample_value("aether_stream_events_total", labels) or 0.0
