"""Event-time rules (docs/architecture.md) as hypothesis properties of the whole pure pipeline:
idempotent, order-insensitive within lateness, late events excluded, deterministic replay;
and the features equal an oracle computed straight from their written definitions."""

from __future__ import annotations

import random
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from features.schema import POPULARITY_EVENT_WEIGHTS, POPULARITY_HALF_LIFE_MS
from streams import user_features
from streams.eventtime import Lateness, forget_before
from streams.item_features import HOUR_MS
from streams.testing import LocalPipeline, interaction, partition_of, record
from streams.user_features import MINUTE_MS, UserFeatureConfig

LATENESS_MS = 30 * MINUTE_MS
POLICY = Lateness(allowed_lateness_ms=LATENESS_MS, dedup_horizon_ms=0, max_future_skew_ms=10**12)
CONFIG = UserFeatureConfig(sequence_length=3)
BASE_MS = 1_700_000_000_000
TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "dismiss")

event_sets = st.lists(
    st.tuples(
        st.sampled_from(["u0", "u1", "u2"]),
        st.sampled_from(["i0", "i1", "i2", "i3"]),
        st.sampled_from(TYPES),
        st.integers(0, 9 * 24 * 60).map(lambda m: BASE_MS + m * MINUTE_MS),
    ),
    min_size=1,
    max_size=60,
).map(lambda rows: [interaction(f"e{n}", u, i, y, t) for n, (u, i, y, t) in enumerate(rows)])


def arrival_order(events: list[dict], seed: int, duplicates: int) -> list[dict]:
    """A shuffled order in which no event is more than the allowed lateness behind (see below),
    plus re-deliveries of random events at random later positions."""
    rng = random.Random(seed)
    # Sorting by event_time + jitter (jitter ≤ lateness) bounds how far any event trails the max.
    keyed = sorted(events, key=lambda e: e["event_time"] + rng.randint(0, LATENESS_MS))
    for _ in range(duplicates):
        position = rng.randrange(1, len(keyed) + 1)  # always after at least one original
        keyed.insert(position, rng.choice(keyed[:position]))
    return keyed


def run(order: list[dict], seed: int) -> LocalPipeline:
    rng = random.Random(seed)
    pipeline = LocalPipeline(policy=POLICY, config=CONFIG)
    start = 0
    while start < len(order):
        size = rng.randint(1, 7)
        pipeline.feed(record(e) for e in order[start : start + size])
        start += size
    return pipeline


def canonical_state(pipeline: LocalPipeline) -> tuple:
    wms = pipeline.watermarks.get("events", {})
    users = {}
    for user_id, state in pipeline.users.items():
        cutoff = POLICY.dedup_cutoff(wms.get(partition_of(user_id)))
        users[user_id] = (
            state.latest_ms,
            forget_before(state.seen, cutoff),
            state.history,
            state.dismissed,
            {t: b for t, b in state.activity.items() if b},
        )
    items = {
        i: (s.latest_ms, s.interaction_ms, s.mass, s.clicks, s.impressions)
        for i, s in pipeline.items.items()
    }
    return users, items, wms


@settings(max_examples=60, deadline=None)
@given(event_sets, st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 8))
def test_any_order_within_lateness_with_duplicates_gives_identical_state_and_rows(
    events: list[dict], seed_a: int, seed_b: int, duplicates: int
) -> None:
    a = run(arrival_order(events, seed_a, 0), seed_a)
    b = run(arrival_order(events, seed_b, duplicates), seed_b)
    assert not a.late
    assert a.applied == b.applied == len(events)
    # A re-delivery is either recognised as a duplicate or, if it trails too far, routed late.
    assert b.duplicates + len(b.late) == duplicates
    assert canonical_state(a) == canonical_state(b)
    assert a.user_rows() == b.user_rows()
    assert a.item_rows() == b.item_rows()
    users = sorted(a.users)
    assert a.store.read_users(users) == b.store.read_users(users) == a.user_rows()
    assert a.store.read_items(sorted(a.items)) == a.item_rows()


@settings(max_examples=40, deadline=None)
@given(event_sets, st.integers(0, 10**6))
def test_replaying_the_same_log_is_deterministic(events: list[dict], seed: int) -> None:
    order = arrival_order(events, seed, 3)
    first, second = run(order, seed), run(order, seed + 1)  # different batch boundaries too
    assert canonical_state(first) == canonical_state(second)
    assert first.user_rows() == second.user_rows()
    assert first.item_rows() == second.item_rows()


@settings(max_examples=40, deadline=None)
@given(event_sets, st.integers(1, 10 * LATENESS_MS))
def test_events_beyond_the_lateness_are_routed_late_and_not_applied(
    events: list[dict], extra_ms: int
) -> None:
    newest = max(events, key=lambda e: e["event_time"])
    straggler = interaction("late-1", newest["user_id"], "i-late", "click", 0)
    straggler["event_time"] = newest["event_time"] - LATENESS_MS - extra_ms
    order = sorted(events, key=lambda e: e["event_time"])
    with_straggler = run([*order, straggler], 0)
    without = run(order, 0)
    assert [r.value for r in with_straggler.late] == [record(straggler).value]
    assert with_straggler.user_rows() == without.user_rows()
    assert "i-late" not in with_straggler.items


# -- the features equal their written definitions (features/FEATURES.md) ------------------------
def oracle_user(events: list[dict], sequence_length: int) -> tuple:
    key = lambda e: (e["event_time"], e["event_id"])  # noqa: E731
    non_dismiss = sorted((e for e in events if e["event_type"] != "dismiss"), key=key)
    latest_dismiss: dict[str, tuple[int, str]] = {}
    for e in events:
        if e["event_type"] == "dismiss":
            latest_dismiss[e["item_id"]] = max(latest_dismiss.get(e["item_id"], key(e)), key(e))
    dismissed = sorted(latest_dismiss, key=latest_dismiss.__getitem__)[-sequence_length:]
    sequence: list[str] = []
    interactions: list[str] = []
    for e in non_dismiss[-2 * sequence_length :]:
        if e["item_id"] not in dismissed and (not sequence or sequence[-1] != e["item_id"]):
            sequence.append(e["item_id"])
        if not interactions or interactions[-1] != e["item_id"]:
            interactions.append(e["item_id"])
    latest_minute = max(e["event_time"] for e in events) // MINUTE_MS
    counts = dict.fromkeys(user_features.ACTIVITY_KEYS, 0)
    for window, minutes in user_features.ACTIVITY_WINDOWS_MINUTES.items():
        for e in events:
            if e["event_time"] // MINUTE_MS > latest_minute - minutes:
                counts[f"{e['event_type']}_{window}"] += 1
    return (
        tuple(sequence[-sequence_length:]),
        tuple(dismissed),
        counts,
        tuple(interactions[-sequence_length:]),
    )


@settings(max_examples=60, deadline=None)
@given(event_sets, st.integers(0, 10**6))
def test_features_match_their_definitions(events: list[dict], seed: int) -> None:
    pipeline = run(arrival_order(events, seed, 2), seed)
    by_user: dict[str, list[dict]] = defaultdict(list)
    by_item: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        by_user[e["user_id"]].append(e)
        by_item[e["item_id"]].append(e)
    for user_id, row in pipeline.user_rows().items():
        expected = oracle_user(by_user[user_id], CONFIG.sequence_length)
        assert (
            row.recent_items,
            row.dismissed_items,
            row.activity_counts,
            row.recent_interactions,
        ) == expected
        assert row.event_time_ms == max(e["event_time"] for e in by_user[user_id])
    for item_id, item_row in pipeline.item_rows().items():
        item_events = by_item[item_id]
        ref = max(e["event_time"] for e in item_events)
        expected_pop = 0.0
        for bucket in sorted({e["event_time"] // HOUR_MS for e in item_events}):
            mass = sum(
                POPULARITY_EVENT_WEIGHTS[e["event_type"]]
                for e in item_events
                if e["event_time"] // HOUR_MS == bucket
            )
            if bucket * HOUR_MS > ref - 14 * 24 * HOUR_MS:
                expected_pop += mass * 2.0 ** (-(ref - bucket * HOUR_MS) / POPULARITY_HALF_LIFE_MS)
        assert abs(item_row.popularity - expected_pop) <= 1e-9 * max(1.0, expected_pop)
        assert item_row.clicks == sum(e["event_type"] == "click" for e in item_events)
        assert item_row.event_time_ms == item_row.popularity_time_ms == ref
