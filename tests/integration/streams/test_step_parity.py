"""The harness and the runtime run one set of steps: the same batches through ``LocalPipeline``
(``InMemoryStateStore``, in-memory rows) and through ``StreamRuntime`` + ``BanditRuntime``
(``RedisStateStore`` on the real Redis, the Feast online store, the parquet offline log) end in
the same states and ask for the same effects, privacy requests included.

The runtime's producer is a recorder: what it is asked to send is one of the compared effects,
and the item updates and outcomes it records are fed back to the item and posterior agents as
the harness feeds its own (no broker: the broker's part is covered by ``test_worker.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from bandits.attribution import AttributionConfig
from bandits.posterior import Outcome, PosteriorConfig
from core.settings import Settings
from features.offline import FeatureHistory, OfflineEventLog
from features.store import FeastOnlineStore
from features.transition_store import redis_transition_store
from streams.agents import StreamRuntime
from streams.bandit_agent import BanditRuntime
from streams.bandit_steps import BanditConfig, BanditSteps
from streams.handlers import Effects, SourceRecord
from streams.sinks import StreamSinks
from streams.statestore import RedisStateStore
from streams.steps import StepConfig, StreamSteps, split_user_records
from streams.testing import LocalPipeline, interaction, merged, partition_of, privacy_request
from streams.topics import TopicNames

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
NOW = T0 + 3_600_000  # the processing clock of both sides (for the future check)
MIN = 60_000
USERS = ["alice", "bob", "carol", "dave", "erin"]
ITEMS = ["i1", "i2", "i3", "i4", "i5"]
ATTRIBUTION = AttributionConfig(window_ms=10 * MIN)
POSTERIOR = PosteriorConfig()


@pytest.fixture
def settings(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[Settings]:
    """Redis only (no broker): this namespace's keys are deleted at teardown."""
    from stack.redis_server import delete_namespace_keys

    yield Settings(namespace=namespace, data_dir=tmp_path / ".aether", REDIS_URL=redis_url)
    delete_namespace_keys(redis_url, namespace)


class Batches:
    """Source records with the partition a user's (or item's) key maps to and running offsets."""

    def __init__(self, topics: TopicNames) -> None:
        self.topics = topics
        self._offsets: dict[tuple[str, int], int] = {}

    def _record(self, topic: str, key: str, body: dict[str, Any] | bytes) -> SourceRecord:
        partition = partition_of(key)
        offset = self._offsets.get((topic, partition), 0)
        self._offsets[(topic, partition)] = offset + 1
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        return SourceRecord(topic, partition, offset, raw, key.encode())

    def event(self, event_id: str, user: str, item: str, kind: str, t: int, **extra: Any) -> Any:
        return self._record(
            self.topics.events, user, {**interaction(event_id, user, item, kind, t), **extra}
        )

    def bad_event(self, user: str, payload: bytes) -> SourceRecord:
        return self._record(self.topics.events, user, payload)

    def privacy(self, event_id: str, user: str, action: str, t: int) -> SourceRecord:
        return self._record(self.topics.privacy, user, privacy_request(event_id, user, action, t))

    def slate(self, request_id: str, user: str, items: list[str], t: int) -> SourceRecord:
        body = {
            "request_id": request_id,
            "user_id": user,
            "event_time": t,
            "model_version": "m1",
            "context": {"surface": "home"},
            "items": [
                {"item_id": i, "position": n, "score": 1.0, "source": "ann", "propensity": 0.5}
                for n, i in enumerate(items)
            ],
        }
        return self._record(self.topics.impressions, user, body)

    def catalog(self, event_id: str, item: str, title: str, t: int) -> SourceRecord:
        body = {"event_id": event_id, "item_id": item, "title": title, "event_time": t}
        return self._record(self.topics.items, item, body)


def scenario(b: Batches) -> list[list[SourceRecord]]:
    """Events, slates and rewards, a bad and a late and a future event, duplicates, catalogue
    updates, an opt-out and opt-in, and a deletion with events in flight on both sides of it."""
    first = [
        *(b.event(f"a{n}", "alice", item, "view", T0 + n * 1000) for n, item in enumerate(ITEMS)),
        b.event("b0", "bob", "i1", "view", T0 + 500),
        b.event("c0", "carol", "i3", "view", T0 + 700),
        b.event("c1", "carol", "i1", "click", T0 + 900),
        b.event("d0", "dave", "i2", "purchase", T0 + 1_100),
        b.event("e0", "erin", "i4", "add_to_cart", T0 + 1_200),
        b.slate("r1", "alice", ["i1", "i2"], T0 + 1_500),
        b.slate("r2", "carol", ["i3", "i5"], T0 + 1_600),
        b.slate("r3", "bob", ["i1", "i4"], T0 + 1_700),
        b.slate("r4", "erin", ["i4", "i5"], T0 + 1_800),
        b.bad_event("dave", b"{not json"),
        b.event("a0", "alice", "i1", "view", T0),  # re-delivered: a duplicate
    ]
    catalogue = [
        *(b.catalog(f"cat-{i}", i, f"Title {i}", T0) for i in ITEMS),
        b._record(b.topics.items, "i9", b'{"item_id": 1}'),  # invalid: a dead letter
    ]
    privacy = [
        b.privacy("p-bob", "bob", "opt_out", T0 + 10_000),
        b.privacy("p-carol", "carol", "delete", T0 + 20_000),
        b.event("c2", "carol", "i2", "view", T0 + 15_000),  # in flight, before the deletion
        b.event("c3", "carol", "i4", "view", T0 + 25_000),  # after it: a fresh state
        b.event("b1", "bob", "i2", "click", T0 + 12_000),  # opted out: suppressed
        b.event("a9", "alice", "i2", "click", T0 + 5_500, request_id="r1"),  # rewards r1|i2
        b.event("e1", "erin", "i5", "dismiss", T0 + 6_000, request_id="r4"),
        b.event("late", "alice", "i3", "view", T0 - 30 * MIN),  # beyond the lateness
        b.event("future", "dave", "i3", "view", NOW + 2 * 24 * 3_600_000),  # a dead letter
    ]
    later = [
        b.privacy("p-bob-in", "bob", "opt_in", T0 + 30_000),
        b.privacy("p-carol", "carol", "delete", T0 + 20_000),  # re-delivered
        b.event("b2", "bob", "i3", "view", T0 + 31_000),
        *(b.event(f"z-{u}", u, "i5", "view", T0 + 40 * MIN) for u in USERS),  # close windows
        b.slate("r5", "dave", ["i2"], T0 + 40 * MIN),
    ]
    renamed = [b.catalog("cat-i2-v2", "i2", "Title i2, second edition", T0 + 60_000)]
    # A deletion with nothing after it: dave's state, row, log and pending slate r5 all go.
    erased = [b.privacy("p-dave", "dave", "delete", T0 + 50 * MIN)]
    return [first, catalogue, privacy, later, renamed, erased]


def view(effects: Effects) -> dict[str, Any]:
    """The comparable content of one batch's effects."""
    return {
        "user_rows": effects.user_rows,
        "item_rows": effects.item_rows,
        "forwards": effects.forwards,
        "dead_letters": [
            (d.record.topic, d.record.partition, d.record.offset, d.reason)
            for d in effects.dead_letters
        ],
        "late": [(r.topic, r.partition, r.offset) for r in effects.late],
        "counts": (effects.applied, effects.duplicates, effects.suppressed),
        "applied_events": [e.event_id for e in effects.applied_events],
        "transitions": effects.transitions,
        "privacy": (
            sorted(effects.privacy.delete),
            sorted(effects.privacy.hide),
            effects.privacy.applied,
            effects.privacy.duplicates,
        ),
    }


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self._next: dict[str, int] = {}  # topic -> next offset, as the broker appends

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int = 0
    ) -> None:
        # One partition (the steps' default ``StepConfig.partitions``): every record lands on 0.
        assert partition == 0, partition
        self.sent.append((topic, value, key))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def take(self, topic: str) -> list[SourceRecord]:
        taken = [(v, k) for t, v, k in self.sent if t == topic]
        self.sent = [s for s in self.sent if s[0] != topic]
        first = self._next.get(topic, 0)
        self._next[topic] = first + len(taken)
        # Offsets go on across batches: the steps skip offsets they have committed.
        return [SourceRecord(topic, 0, first + n, v, k) for n, (v, k) in enumerate(taken)]


class Runtime:
    """The Faust agents' runtimes, wired as ``streams.build_worker`` wires them, minus Kafka."""

    def __init__(self, settings: Settings, topics: TopicNames) -> None:
        self.topics = topics
        self.producer = RecordingProducer()
        self.store = RedisStateStore(settings.redis, settings.deployment)
        self.rows = FeastOnlineStore(settings.redis, settings.deployment)
        self.log = OfflineEventLog(settings.deployment)
        self.sinks = StreamSinks(self.log, FeatureHistory(settings.deployment))
        config = StepConfig(topics)
        self.features = StreamRuntime(
            StreamSteps(config),
            writer=self.rows,
            state=self.store,
            producer=self.producer,  # type: ignore[arg-type]
            sinks=self.sinks,
            clock=lambda: NOW,
        )
        self.bandit = BanditRuntime(
            BanditSteps(BanditConfig(topics, ATTRIBUTION, POSTERIOR, config.policy)),
            state=self.store,
            producer=self.producer,  # type: ignore[arg-type]
            now_ms=lambda: NOW,
        )
        self.outcomes: list[Outcome] = []

    async def feed(self, batch: list[SourceRecord]) -> Effects:
        """As the Faust app's agents do (``streams.app``), then the re-keyed topics."""
        self.producer.sent.clear()
        if {r.topic for r in batch} == {self.topics.items}:
            effects = await self.features.on_catalog(batch)
        else:
            interactions, impressions = split_user_records(batch, self.topics)
            parts = []
            if interactions:
                parts.append(await self.features.on_interactions(interactions))
            if impressions:
                parts.append(await self.features.on_impressions(impressions))
            self.outcomes += await self.bandit.on_attribution(batch)
            effects = merged(parts)
        self.emitted = [t for t, _, _ in self.producer.sent]
        updates = self.producer.take(self.topics.item_updates)
        if updates:
            await self.features.on_item_updates(updates)
        outcomes = self.producer.take(self.topics.bandit_outcomes)
        if outcomes:
            await self.bandit.on_outcomes(outcomes)
        return effects


USER_IDS, ITEM_IDS = [*USERS, "nobody"], [*ITEMS, "i9", "nothing"]


def assert_same_state(runtime: Runtime, harness: LocalPipeline) -> None:
    """Every state both sides keep, read back through the port, and the rows online."""
    redis_side, memory, topics = runtime.store, harness.state, runtime.topics
    assert redis_side.load_users(USER_IDS) == memory.load_users(USER_IDS)
    assert redis_side.load_items(ITEM_IDS) == memory.load_items(ITEM_IDS)
    assert redis_side.load_privacy(USER_IDS) == memory.load_privacy(USER_IDS)
    for topic in (topics.events, topics.impressions, topics.items):
        assert redis_side.load_watermarks(topic, [0, 1]) == memory.load_watermarks(topic, [0, 1])
    assert redis_side.load_attribution([0, 1]) == memory.load_attribution([0, 1])
    posteriors = {i: s.to_dict() for i, s in redis_side.load_posteriors(ITEM_IDS).items()}
    assert posteriors == {i: s.to_dict() for i, s in memory.load_posteriors(ITEM_IDS).items()}
    assert runtime.rows.read_users(USER_IDS) == harness.store.read_users(USER_IDS)
    assert runtime.rows.read_items(ITEM_IDS) == harness.store.read_items(ITEM_IDS)
    runtime.sinks.flush(runtime.store)  # the worker's timer does this every second
    logged = sorted(runtime.log.read()["event_id"]) if runtime.log.folder.exists() else []
    assert logged == sorted(e.event_id for e in harness.event_log)


def test_the_harness_and_the_runtime_agree_on_every_state_and_effect(settings: Settings) -> None:
    topics = TopicNames.for_settings(settings)
    batches = scenario(Batches(topics))
    harness = LocalPipeline(topics=topics, now_ms=NOW, attribution=ATTRIBUTION)
    runtime = Runtime(settings, topics)
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    try:
        for batch in batches:
            expected = view(harness.feed(batch))
            got = view(asyncio.run(runtime.feed(batch)))
            assert got == expected
            assert runtime.emitted.count(topics.dead_letters) == len(expected["dead_letters"])
            assert runtime.emitted.count(topics.late_events) == len(expected["late"])
            assert_same_state(runtime, harness)
        assert runtime.outcomes == harness.outcomes

        # The scenario exercised what it is meant to.
        reasons = {d.reason for d in harness.dead_letters}
        assert {"invalid_json", "future_event_time"} <= reasons and len(harness.late) == 1
        assert harness.suppressed == 2 and harness.duplicates >= 1
        assert harness.erased == ["carol", "dave"]
        outcomes = {o.outcome_id: o.success for o in harness.outcomes}
        assert outcomes["r1|i2"] is True and {"r1|i1", "r4|i5", "r3|i4"} <= set(outcomes)
        assert not [o for o in outcomes if o.startswith(("r2|", "r5|"))]  # users deleted

        # The outputs exactly-once with the state: posterior hashes and transitions.
        memory = harness.state
        for parts, fields in memory.posterior_hashes.items():
            stored = client.hgetall(settings.deployment.redis_key(*parts))
            assert {k.decode(): v.decode() for k, v in stored.items()} == fields
        stored_hashes = set(client.scan_iter(settings.deployment.redis_key("bandit", "*")))
        assert len(stored_hashes) == len(memory.posterior_hashes) == 2  # "*" and surface=home
        anchors = memory.transitions.anchors()
        got = redis_transition_store(client, settings.namespace).neighbours(anchors, 100)
        want = memory.transitions.neighbours(anchors, 100)
        assert got.keys() == want.keys() and len(anchors) >= 4
        for anchor in anchors:
            assert [i for i, _ in got[anchor]] == [i for i, _ in want[anchor]]
            assert [p for _, p in got[anchor]] == pytest.approx([p for _, p in want[anchor]])

        # Privacy, as both sides ended: bob opted in again; carol starts after her deletion;
        # dave is gone from every state, row and log.
        rows = harness.store.read_users(USER_IDS)
        assert "bob" in rows and "dave" not in rows
        assert rows["carol"].recent_items == ("i4", "i5")  # nothing from before the deletion
        assert "dave" not in memory.users and "dave" not in str(memory.attribution)
        logged = {e.event_id for e in harness.event_log}
        assert not {"c0", "c1", "c2", "b1", "d0", "late", "future"} & logged
        assert {"c3", "b0", "b2"} <= logged
    finally:
        client.close()
        runtime.store.close()
