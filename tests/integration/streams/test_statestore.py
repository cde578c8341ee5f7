"""The ``StateStore`` contract, run against the in-memory store and ``RedisStateStore`` on the real
Redis: one commit's changes read back, deletions before writes, and the batched load."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bandits.attribution import AttributionConfig, AttributionState, Input, attribute
from bandits.posterior import Outcome, PosteriorConfig, PosteriorState, apply_outcome
from core.settings import RedisSettings, Settings
from events.models import Impression, ImpressionItem, Interaction
from monitoring import Saved
from streams.item_features import ItemState
from streams.privacy import PrivacyStatus
from streams.state_port import (
    AttributionHead,
    InMemoryStateStore,
    SlateMemory,
    StateCommit,
    StateStore,
)
from streams.statestore import RedisStateStore
from streams.user_features import UserState

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


@pytest.fixture(params=["memory", "redis", "cluster"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "memory":
        yield InMemoryStateStore()
        return
    yield from _redis_store(request, tmp_path)


@pytest.fixture(params=["redis", "cluster"])
def redis_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisStateStore]:
    yield from _redis_store(request, tmp_path)


def _redis_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisStateStore]:
    if request.param == "cluster":
        # A three-master Redis Cluster: every commit must stay in one hash slot (CROSSSLOT
        # otherwise). Its nodes live for the session only; namespaces keep tests apart.
        url: str = request.getfixturevalue("redis_cluster_url")
        namespace = request.getfixturevalue("namespace")
        settings = Settings(
            namespace=namespace,
            data_dir=tmp_path,
            REDIS_URL=url,
            redis=RedisSettings(cluster=True),
        )
        cluster_store = RedisStateStore(settings.redis, settings.deployment)
        try:
            yield cluster_store
        finally:
            cluster_store.close()
        return
    from stack.redis_server import delete_namespace_keys

    redis_url: str = request.getfixturevalue("redis_url")
    namespace: str = request.getfixturevalue("namespace")
    settings = Settings(namespace=namespace, data_dir=tmp_path, REDIS_URL=redis_url)
    redis_store = RedisStateStore(settings.redis, settings.deployment)
    try:
        yield redis_store
    finally:
        redis_store.close()
        delete_namespace_keys(redis_url, namespace)


def test_the_batched_load_equals_the_three_loads_it_replaces(store: StateStore) -> None:
    store.commit(
        StateCommit(
            watermarks={"events": {0: 1_000, 2: 3_000}},
            users={"u1": UserState(latest_ms=1_000), "u2": UserState(latest_ms=2_000)},
            privacy={
                "u2": PrivacyStatus(opted_out=True),
                "u3": PrivacyStatus(deleted_through_ms=5),
            },
        )
    )
    store.commit(StateCommit(watermarks={"impressions": {1: 9_000}}))  # another topic's marks
    users, partitions = ["u3", "u1", "nobody", "u2", "u1"], [2, 1, 0, 2]

    loaded = store.load_interactions(users, "events", partitions)

    assert loaded.privacy == store.load_privacy(users)
    assert set(loaded.privacy) == {"u2", "u3"}
    assert loaded.users == store.load_users(users)
    assert set(loaded.users) == {"u1", "u2"}
    assert loaded.watermarks == store.load_watermarks("events", partitions)
    assert loaded.watermarks == {0: 1_000, 1: None, 2: 3_000}
    assert store.load_watermarks("impressions", [1]) == {1: 9_000}
    empty = store.load_interactions([], "events", [])
    assert (empty.privacy, empty.users, empty.watermarks) == ({}, {}, {})
    only_users = store.load_interactions(["u1"], "events", [])
    assert (only_users.users, only_users.watermarks) == ({"u1": loaded.users["u1"]}, {})
    assert store.load_interactions([], "events", [0]).watermarks == {0: 1_000}


def test_the_slate_memory_answers_per_partition_and_forgets_below_its_cutoff(
    store: StateStore,
) -> None:
    store.commit(
        StateCommit(
            watermarks={"impressions": {0: 5_000}},
            slates={0: SlateMemory({"r1": 1_000, "r2": 4_000}), 1: SlateMemory({"r3": 2_000})},
        )
    )
    loaded = store.load_impressions("impressions", [0, 1], {0: ["r1", "r3", "new"], 1: ["r3"]})
    assert loaded.watermarks == {0: 5_000, 1: None}
    assert loaded.applied == {0: {"r1"}, 1: {"r3"}}  # r3 was applied on partition 1 only

    # Ids older than the cutoff go, in the same commit as the batch's new ones; the cutoff is
    # exclusive (an id exactly at it stays), and another partition's memory is untouched.
    store.commit(StateCommit(slates={0: SlateMemory({"r4": 6_000}, forget_before=4_000)}))
    again = store.load_impressions("impressions", [], {0: ["r1", "r2", "r4"], 1: ["r3"]})
    assert again.applied == {0: {"r2", "r4"}, 1: {"r3"}}
    assert store.load_impressions("impressions", [], {}).applied == {}


def test_one_commit_holds_every_kind_of_state_and_deletes_before_it_writes(
    store: StateStore,
) -> None:
    store.commit(
        StateCommit(
            users={"gone": UserState(latest_ms=1), "kept": UserState(latest_ms=2)},
            seen={"gone": {"old"}, "kept": {"a", "b"}},
        )
    )
    posterior, writes = apply_outcome(
        PosteriorState(), Outcome("r|a", "a", "*", 1_000, True, "positive"), PosteriorConfig()
    )
    attribution = AttributionState()
    attribution.advance_watermark(Input.IMPRESSIONS, 7)
    attribution.mark_seen("r:x", 7)
    store.commit(
        StateCommit(
            forget_users={"gone", "never-stored"},
            users={"gone": UserState(latest_ms=50)},  # after the deletion: a fresh state
            items={"a": ItemState(latest_ms=3, clicks=2, title="A")},
            attribution={3: attribution.delta("w:1")},
            posteriors={"a": posterior},
            posterior_writes={(w.hash_parts, w.field): w.value for w in writes},
            transitions={("a", "b"): 1.0},
            offsets={"interactions": {("events", 3): 12}, "attribution": {("events", 3): 9}},
            drift={"user:3": Saved(b"core-1", {"5:0": b"a", "6:0": b"b"}, [], replace=True)},
            first_seen={"events:3": {"u:ab": 5, "i:a": 7}},
            seen={"gone": {"new"}, "kept": {"b", "c"}},  # gone's old set deleted first
        )
    )
    assert (store.load_seen("gone"), store.load_seen("kept")) == ({"new"}, {"a", "b", "c"})
    assert store.load_seen("nobody") == set()
    assert store.load_drift(["user:3", "user:4"]).cores == {"user:3": b"core-1"}
    assert store.load_drift_chunks("user:3") == {"5:0": b"a", "6:0": b"b"}
    # A drift save adds its chunks and drops its closed windows' ones; a replacing one starts over.
    store.commit(StateCommit(drift={"user:3": Saved(b"core-2", {"6:1": b"c"}, ["5:0"])}))
    assert store.load_drift(["user:3"]).cores == {"user:3": b"core-2"}
    assert store.load_drift_chunks("user:3") == {"6:0": b"b", "6:1": b"c"}
    store.commit(StateCommit(drift={"user:3": Saved(b"core-3", {"7:0": b"d"}, [], replace=True)}))
    assert store.load_drift_chunks("user:3") == {"7:0": b"d"}
    assert store.load_drift_chunks("user:4") == {}
    both = store.load_drift(
        ["user:3", "user:4"], {"events:3": ["u:ab", "i:a", "i:b"], "events:2": ["u:ab"]}
    )
    assert both.cores == {"user:3": b"core-3"}
    assert both.first_seen == {"events:3": {"u:ab": 5, "i:a": 7}, "events:2": {}}
    store.commit(StateCommit(first_seen={"events:3": {"i:a": 6}}))
    assert store.load_drift([], {"events:3": ["i:a", "u:ab"]}).first_seen == {
        "events:3": {"i:a": 6, "u:ab": 5}
    }
    assert store.load_offsets("interactions", [("events", 3), ("events", 1)]) == {("events", 3): 12}
    assert store.load_offsets("attribution", [("events", 3)]) == {("events", 3): 9}
    assert store.load_users(["gone", "kept"]) == {
        "gone": UserState(latest_ms=50),
        "kept": UserState(latest_ms=2),
    }
    assert store.load_items(["a", "b"]) == {"a": ItemState(latest_ms=3, clicks=2, title="A")}
    assert store.load_attribution([3, 4]) == {3: attribution.to_dict()}
    assert store.load_posteriors(["a", "b"])["a"].to_dict() == posterior.to_dict()
    store.commit(StateCommit(forget_users={"gone"}))
    assert set(store.load_users(["gone", "kept"])) == {"kept"}
    assert store.load_seen("gone") == set() and store.load_seen("kept") == {"a", "b", "c"}
    assert (
        not StateCommit(seen={"u": {"i"}}).is_empty() and StateCommit(seen={"u": set()}).is_empty()
    )
    assert StateCommit().is_empty() and not StateCommit(forget_users={"x"}).is_empty()
    assert not StateCommit(drift={"user:0": Saved(b"x", {}, [])}).is_empty()
    assert not StateCommit(first_seen={"events:0": {"i:a": 1}}).is_empty()
    assert StateCommit(first_seen={"events:0": {}}).is_empty()
    store.commit(StateCommit())  # nothing to do: fine


def test_attribution_deltas_add_change_and_remove_entries_and_a_whole_one_replaces(
    store: StateStore,
) -> None:
    config = AttributionConfig(window_ms=1_000, allowed_lateness_ms=100)
    state = AttributionState()
    slate = Impression(
        request_id="r|1",  # ids may hold any character: they are part of the field names
        user_id="u1",
        event_time=T0,
        model_version="m",
        items=(ImpressionItem(item_id="a", position=0, score=1.0, source="ann", propensity=0.5),),
    )
    for event in (
        slate,
        Interaction(
            event_id="c:1", event_type="click", user_id="u2", item_id="z", event_time=T0 + 10
        ),
    ):
        state, _ = attribute(state, event, config)
    assert store.load_attribution_heads([0]) == {}
    store.commit(StateCommit(attribution={0: state.delta("w:1")}))
    assert store.load_attribution([0, 1]) == {0: state.to_dict()}
    click = Interaction(
        event_id="c:2", event_type="click", user_id="u1", item_id="a", event_time=T0 + 500
    )
    state, _ = attribute(state, click, config)  # the slot turns positive: a changed entry
    state, outcomes = attribute(
        state,
        Interaction(
            event_id="v", event_type="view", user_id="u3", item_id="q", event_time=T0 + 2_000
        ),
        config,
    )
    assert [o.success for o in outcomes] == [True]  # decided: the slot and old ids go
    delta = state.delta("w:2")
    assert not delta.whole and None in delta.pending.values() and None in delta.seen.values()
    store.commit(StateCommit(attribution={0: delta}))
    assert store.load_attribution([0]) == {0: state.to_dict()}
    assert store.load_attribution_heads([0, 1]) == {
        0: AttributionHead("w:2", {Input.IMPRESSIONS: T0, Input.EVENTS: T0 + 2_000})
    }
    fresh = AttributionState()
    fresh.mark_seen("e:only", 5)
    store.commit(StateCommit(attribution={0: fresh.delta("w:3")}))  # whole: replaces it all
    assert store.load_attribution([0]) == {0: fresh.to_dict()}


def test_a_snapshot_from_before_the_deltas_is_read_and_then_replaced(
    redis_store: RedisStateStore,
) -> None:
    store = redis_store
    legacy = {"watermarks": {"events": 50}, "pending": [], "rewards": {}, "seen": {"e:a": 50}}
    key = store._legacy_attribution_key(2)
    store._client.set(key, orjson.dumps(legacy))
    assert store.load_attribution([2]) == {2: legacy}
    assert store.load_attribution_heads([2]) == {2: AttributionHead(None, {Input.EVENTS: 50})}
    state = AttributionState.from_dict(legacy, AttributionConfig())
    store.commit(StateCommit(attribution={2: state.delta("w:1")}))
    assert store._client.exists(key) == 0
    # the same state, now with the (empty) outbox the legacy snapshot did not have
    assert store.load_attribution([2]) == {2: {**legacy, "serial": 0, "outbox": []}}
    assert store.load_attribution_heads([2])[2].version == "w:1"


def test_the_outbox_and_the_posterior_marks_round_trip(redis_store: RedisStateStore) -> None:
    """Attribution's numbered outcomes (its outbox) and the posteriors' marks per source
    partition are stored with their states and read back as they were."""
    store = redis_store
    state = AttributionState()
    outcomes = [
        Outcome("r1|a", "a", "*", 1_000, True, "positive"),
        Outcome("r2|b", "b", "*", 2_000, False, "no_reward", propensity=0.25),
    ]
    first = state.stamp(outcomes[:1], origin=3)
    numbered = state.stamp(outcomes, origin=3)
    assert [(o.origin, o.serial) for o in first + numbered] == [(3, 0), (3, 1), (3, 2)]
    store.commit(StateCommit(attribution={3: state.delta("w:1")}))
    loaded = store.load_attribution([3])[3]
    assert loaded == state.to_dict() and loaded["serial"] == 3
    assert AttributionState.from_dict(loaded, AttributionConfig()).outbox == numbered
    posterior, config = PosteriorState(), PosteriorConfig()
    for outcome in numbered:
        apply_outcome(posterior, outcome, config)
    store.commit(StateCommit(posteriors={"a": posterior}))
    assert store.load_posteriors(["a"])["a"].marks == {3: 2}


def test_offsets_read_ahead_answer_as_the_store_and_follow_its_commits(store: StateStore) -> None:
    a, b = ("events", 0), ("impressions", 1)
    store.commit(StateCommit(offsets={"interactions": {a: 5}, "drift": {b: 7}}))

    with store.reading_offsets_ahead(["interactions", "drift"], [a, b]):
        assert store.load_offsets("interactions", [a, b]) == {a: 5}
        assert store.load_offsets("drift", [b]) == {b: 7}
        store.commit(StateCommit(offsets={"interactions": {a: 9, b: 2}}))
        assert store.load_offsets("interactions", [b, a]) == {a: 9, b: 2}
        store.commit(StateCommit(offsets={"attribution": {a: 4}}))  # not read ahead
        assert store.load_offsets("attribution", [a]) == {a: 4}
        assert store.load_offsets("drift", [a, b]) == {b: 7}  # a partition not read ahead

    assert store.load_offsets("interactions", [a, b]) == {a: 9, b: 2}


def test_offsets_read_ahead_are_one_read_for_the_block_and_gone_after_it(
    redis_store: RedisStateStore,
) -> None:
    """What the block trusts: nothing but this store writes the consumers' offsets meanwhile
    (a worker's batch). A write behind its back shows that the loads ask Redis nothing."""
    a = ("events", 3)
    redis_store.commit(StateCommit(offsets={"interactions": {a: 5}}))
    behind = RedisStateStore(RedisSettings(), redis_store._deployment, client=redis_store._client)

    with redis_store.reading_offsets_ahead(["interactions"], [a]):
        behind.commit(StateCommit(offsets={"interactions": {a: 6}}))
        assert redis_store.load_offsets("interactions", [a]) == {a: 5}
        clash = redis_store.reading_offsets_ahead(["interactions", "drift"], [a])
        with pytest.raises(RuntimeError, match="read ahead already"), clash:
            pass
        assert redis_store.load_offsets("interactions", [a]) == {a: 5}  # still the block's

    assert redis_store.load_offsets("interactions", [a]) == {a: 6}
