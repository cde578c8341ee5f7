"""The worker's other outputs on the real broker and Redis: the offline event log (with its many
small batch files merged as they come), item transitions for retrieval, and privacy requests
(opt-out, delete) with a scan of every store and of every topic (what Kafka still holds of a
deleted user is only in topics with a retention)."""

from __future__ import annotations

import math
import time

import orjson
import pyarrow.parquet as pq
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from streams_harness import Lane, consumed, encoded, produce, wait_for

from core.settings import Settings
from features.batch_folder import DEFAULT_COMPACTION, BatchFolder, folder_usage, plan_merge
from features.offline import EVENT_LOG_SCHEMA, FeatureHistory, OfflineEventLog, offline_dir
from features.schema import USER_VIEW
from features.store import FeastOnlineStore
from features.transition_store import InMemoryTransitionStore, stream_slot
from retrieval.build_retriever import transition_store
from streams.statestore import seen_items_key
from streams.testing import interaction
from streams.topics import HOUR_MS, TopicNames
from streams.transitions import increments_from_sequence

pytestmark = pytest.mark.integration

SMALL_BATCHES = 30
GONE = "zz-deleted-user"  # a distinctive id: any leftover anywhere is found by a substring scan
QUIET = "opted-out-user"
SEQUENCES = {
    "keeper": ["a", "b", "c", "d", "b", "c"],
    "other": ["a", "b", "e", "a", "c"],
    GONE: ["a", "x", "b", "y"],
    QUIET: ["c", "d"],
}


def _events(lane: Lane) -> list[dict[str, object]]:
    events = []
    for n, (user, items) in enumerate(SEQUENCES.items()):
        for step, item in enumerate(items):
            kind = "click" if step % 2 else "view"
            # Opaque event ids: a user id must not hide in them for the leftover scan.
            event_id, t = lane.id(f"ev{n}-{step}"), lane.t0 + step * 1000 + n
            events.append(interaction(event_id, lane.id(user), lane.id(item), kind, t))
    return events


def _privacy(event_id: str, user: str, action: str, t: int) -> tuple[bytes, bytes]:
    body = {"event_id": event_id, "user_id": user, "action": action, "event_time": t}
    return user.encode(), orjson.dumps(body)


def _value_bytes(client: redis.Redis, key: bytes) -> bytes:
    kind = client.type(key)
    if kind == b"string":
        return client.get(key) or b""
    if kind == b"hash":
        return repr(client.hgetall(key)).encode()
    if kind == b"zset":
        return repr(client.zrange(key, 0, -1)).encode()
    if kind == b"set":
        return repr(sorted(client.smembers(key))).encode()
    return b""


def _topics_holding(settings: Settings, needle: bytes, quiet_s: float = 3.0) -> set[str]:
    """The namespace's topics with a record whose key or value contains ``needle`` (each read
    to its end: until nothing more arrives for ``quiet_s``)."""
    names = TopicNames.for_settings(settings).all()
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "privacy-scan"}
    )
    try:
        metadata = consumer.list_topics(timeout=10).topics
        consumer.assign(
            [
                TopicPartition(n, p, 0)
                for n in names
                if n in metadata
                for p in metadata[n].partitions
            ]
        )
        found: set[str] = set()
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            last = time.monotonic()
            if needle in (message.key() or b"") or needle in (message.value() or b""):
                found.add(message.topic())
        return found
    finally:
        consumer.close()


def _retention_ms(settings: Settings, topics: set[str]) -> dict[str, str | None]:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    futures = admin.describe_configs([ConfigResource("topic", t) for t in sorted(topics)])
    out: dict[str, str | None] = {}
    for resource, future in futures.items():
        entry = future.result(timeout=15).get("retention.ms")
        out[resource.name] = entry.value if entry is not None else None
    return out


def test_offline_log_transitions_and_privacy_requests(lane: Lane) -> None:
    settings = lane.settings
    users = [lane.id(user) for user in SEQUENCES]
    gone, quiet, keeper = lane.id(GONE), lane.id(QUIET), lane.id("keeper")
    events = _events(lane)
    store = FeastOnlineStore(settings.redis, settings.deployment)
    produce(settings, "events", encoded(events))
    wait_for(lambda: len(store.read_users(users)) == 4, what="user rows")
    wait_for(lambda: consumed(settings, ["events"]), what="events consumed")

    # 1. every applied event is in the offline log, and the rows in the feature history
    # (the namespace is the shared worker's: only this test's users are looked at)
    log = OfflineEventLog(settings.deployment)
    assert sorted(log.read(user_ids=users)["event_id"]) == sorted(
        str(e["event_id"]) for e in events
    )
    history = set(FeatureHistory(settings.deployment).read(USER_VIEW)["user_id"])
    assert {user for user in history if user.startswith(lane.tag)} == set(users)

    # 1b. a quiet worker: many batches of one event each; the log's small files are merged as
    # they come (features.batch_folder), before the deletion below has to find the user in them
    chatty = lane.id("chatty")
    for n in range(SMALL_BATCHES):
        one = interaction(lane.id(f"chatty{n}"), chatty, lane.id("a"), "view", lane.t0 + 30_000 + n)
        produce(settings, "events", encoded([one]))
        wait_for(lambda n=n: len(log.read(user_ids=[chatty])) == n + 1, what=f"batch {n}")

    def sizes_now() -> list[int]:
        return [path.stat().st_size for path in BatchFolder(log.folder, EVENT_LOG_SCHEMA).files()]

    def merged() -> bool:
        try:
            return plan_merge(sizes_now(), DEFAULT_COMPACTION) is None
        except FileNotFoundError:  # listed, then merged away: look again
            return False

    # The worker's last append takes its merge: each file then outweighs 1/(fanout − 1) of the
    # newer ones (DEFAULT_COMPACTION), hence a number of files logarithmic in the bytes logged. A
    # batch is readable once published, a moment before that merge: wait for it.
    wait_for(merged, what="the last append's merge")
    usage = folder_usage(log.folder)
    sizes = sizes_now()
    assert usage.batches >= SMALL_BATCHES and usage.files == len(sizes)
    assert plan_merge(sizes, DEFAULT_COMPACTION) is None
    fanout = DEFAULT_COMPACTION.fanout
    assert usage.files <= 1 + math.log(sum(sizes) / min(sizes)) / math.log(fanout / (fanout - 1))
    assert usage.files < usage.batches / 2, usage

    # 2. transitions equal the offline builder's over each user's sequence
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    reference = InMemoryTransitionStore()
    for items in SEQUENCES.values():
        reference.apply(increments_from_sequence([lane.id(i) for i in items], window=3))
    anchors = [lane.id(i) for i in "abcx"]
    got = transition_store(settings.deployment, client).neighbours(anchors, 10)
    want = reference.neighbours(anchors, 10)
    for anchor in anchors:
        assert [i for i, _ in got[anchor]] == [i for i, _ in want[anchor]]
        assert [p for _, p in got[anchor]] == pytest.approx([p for _, p in want[anchor]])

    # 2b. every item a user interacted with is in their seen set (serving.seen_items)
    gone_seen = seen_items_key(settings.namespace, gone)
    assert client.smembers(gone_seen) == {lane.id(i).encode() for i in SEQUENCES[GONE]}

    # 3. delete one user, opt another out; then events in flight for both, and a sentinel
    t_request = lane.t0 + 60_000
    p1, p2 = lane.id("p1"), lane.id("p2")
    produce(
        settings,
        "privacy",
        [_privacy(p1, gone, "delete", t_request), _privacy(p2, quiet, "opt_out", t_request)],
    )
    wait_for(lambda: not store.read_users([gone, quiet]), what="rows of both users removed")
    quiet_before = store.client.get(f"{stream_slot(settings.namespace)}:stream:user:{quiet}")
    z = lane.id("z")
    late_for_gone = interaction(lane.id("inflight1"), gone, z, "click", t_request - 5_000)
    new_for_quiet = interaction(lane.id("quiet-new"), quiet, z, "click", t_request + 1_000)
    sentinel = interaction(lane.id("sentinel"), keeper, z, "view", t_request + 2_000)
    produce(settings, "events", encoded([late_for_gone, new_for_quiet, sentinel]))
    produce(settings, "privacy", [_privacy(p1, gone, "delete", t_request)])  # re-delivered
    wait_for(lambda: consumed(settings, ["events", "privacy"]), what="everything consumed")
    assert store.read_users([keeper])[keeper].event_time_ms == t_request + 2_000

    # The deleted user: nothing left in Redis (keys of the namespace and Feast's), in the online
    # store, the offline log or the feature history.
    keys = [
        *client.scan_iter(f"{settings.namespace}:*"),
        *client.scan_iter(f"*{settings.namespace}"),
    ]
    assert keys and not [k for k in keys if gone.encode() in k]
    values = [_value_bytes(client, k) for k in keys]
    assert not [k for k, v in zip(keys, values, strict=True) if gone.encode() in v]
    assert store.read_users([gone]) == {}
    assert not client.exists(gone_seen)  # the seen set went with the stream state
    parquet = sorted(offline_dir(settings.deployment).rglob("*.parquet"))
    assert parquet and not [p for p in parquet if gone in str(pq.read_table(p).to_pylist())]
    assert "-" in " ".join(p.name for p in parquet)  # merged files among them
    assert log.read(user_ids=[gone]).empty

    # Kafka cannot delete records: the topics that still hold the deleted user's id are the
    # ones holding user data, and every one of them has the user-data retention.
    names = TopicNames.for_settings(settings)
    user_data = {names.events, names.privacy, names.impressions, names.dead_letters}
    user_data.add(names.late_events)
    holding = _topics_holding(settings, gone.encode())
    assert names.events in holding and names.privacy in holding
    assert holding <= user_data, holding - user_data
    retention = str(settings.kafka.user_data_retention_hours * HOUR_MS)
    assert _retention_ms(settings, user_data) == dict.fromkeys(user_data, retention)

    # The opted-out user: the new event made no features, no state change, no offline record.
    assert store.read_users([quiet]) == {}
    assert (
        store.client.get(f"{stream_slot(settings.namespace)}:stream:user:{quiet}") == quiet_before
    )
    logged = set(log.read()["event_id"])
    assert lane.id("quiet-new") not in logged
    assert lane.id("sentinel") in logged
