"""``RedisStateStore`` against the real Redis: the interactions agent's one-round-trip load."""

from __future__ import annotations

from core.settings import Settings
from streams.privacy import PrivacyStatus
from streams.statestore import RedisStateStore
from streams.user_features import UserState


def test_the_batched_load_equals_the_three_loads_it_replaces(settings: Settings) -> None:
    store = RedisStateStore(settings)
    try:
        store.commit(
            topic="events",
            watermarks={0: 1_000, 2: 3_000},
            users={"u1": UserState(latest_ms=1_000), "u2": UserState(latest_ms=2_000)},
            privacy={
                "u2": PrivacyStatus(opted_out=True),
                "u3": PrivacyStatus(deleted_through_ms=5),
            },
        )
        store.commit(topic="impressions", watermarks={1: 9_000})  # another topic's marks
        users, partitions = ["u3", "u1", "nobody", "u2", "u1"], [2, 1, 0, 2]

        privacy, states, watermarks = store.load_interaction_batch(users, "events", partitions)

        assert privacy == store.load_privacy(users)
        assert set(privacy) == {"u2", "u3"}
        assert states == store.load_users(users)
        assert set(states) == {"u1", "u2"}
        assert watermarks == store.load_watermarks("events", partitions)
        assert watermarks == {0: 1_000, 1: None, 2: 3_000}
        assert store.load_interaction_batch([], "events", []) == ({}, {}, {})
        assert store.load_interaction_batch(["u1"], "events", []) == ({}, {"u1": states["u1"]}, {})
        assert store.load_interaction_batch([], "events", [0]) == ({}, {}, {0: 1_000})
    finally:
        store.close()
