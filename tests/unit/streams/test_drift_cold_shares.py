"""Cold-user and cold-item shares of events in the worker's drift monitors
(``streams.drift_steps``): defined by event time from each user's and item's first admitted event,
kept in the store with the monitor's state, and independent of arrival order, duplicates and
batching within the allowed lateness."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ConfigError
from events import encode
from events.models import Interaction
from monitoring import MonitorConfig, MonitorState, load, to_bytes
from monitoring.config import Signal
from streams.drift_steps import DAY_MS, DriftConfig, DriftSteps
from streams.eventtime import Lateness
from streams.handlers import SourceRecord
from streams.state_port import InMemoryStateStore
from streams.topics import TopicNames

TOPICS = TopicNames(*(f"cold.{name}" for name in TopicNames.__dataclass_fields__))
T0 = 1_700_000_000_000
HOUR_MS = 3_600_000
LATENESS_MS = 60_000
WINDOW_MS = 10_000


def config() -> DriftConfig:
    monitor = MonitorConfig(window_ms=WINDOW_MS, allowed_lateness_ms=LATENESS_MS)
    return DriftConfig(
        topics=TOPICS,
        policy=Lateness(allowed_lateness_ms=LATENESS_MS),
        user_monitor=monitor,
        outcome_monitor=monitor,
    )


def event(event_id: str, user: str, item: str, t: int) -> Interaction:
    return Interaction(
        event_id=event_id, event_type="view", user_id=user, item_id=item, event_time=t
    )


def records(events: list[Interaction]) -> list[SourceRecord]:
    return [
        SourceRecord(TOPICS.events, 0, offset, encode(e), e.user_id.encode())
        for offset, e in enumerate(events)
    ]


def run(events: list[Interaction], batch: int | list[int] = 50) -> InMemoryStateStore:
    store, steps = InMemoryStateStore(), DriftSteps(config())
    stream = records(events)
    cuts = batch if isinstance(batch, list) else [batch] * len(stream)
    start = 0
    for size in cuts:
        if start >= len(stream):
            break
        effects = steps.user_records(store, stream[start : start + size], now_ms=None)
        store.commit(effects.commit)
        start += size
    while start < len(stream):
        effects = steps.user_records(store, stream[start : start + 50], now_ms=None)
        store.commit(effects.commit)
        start += 50
    return store


def stored(store: InMemoryStateStore, monitor: str = "events:0") -> MonitorState:
    """The monitor's state as a restarted worker would load it."""
    core, chunks = store.drift[monitor], store.load_drift_chunks(monitor)
    return load(core, chunks, config().user_monitor)


def estimate(store: InMemoryStateStore, signal: Signal) -> float:
    return stored(store).detectors[signal]["all"].estimate


def test_events_within_a_users_first_day_and_an_items_first_week_are_cold() -> None:
    # One event per window, so each closed window feeds a share of 0 or 1.
    events = [
        event("a", "u1", "i1", T0),  # new user, new item: cold, cold
        event("b", "u1", "i1", T0 + 2 * HOUR_MS),  # user's first day, item's first week
        event("c", "u1", "i1", T0 + 2 * DAY_MS),  # old user, item still in its first week
        event("d", "u1", "i1", T0 + 8 * DAY_MS),  # old user, old item
        event("e", "u2", "i2", T0 + 9 * DAY_MS),  # closes the others' windows
    ]
    store = run(events, batch=1)
    # Windows closed: a, b, c, d. Cold users: a, b -> mean share 2/4; cold items: a, b, c -> 3/4.
    assert estimate(store, Signal.COLD_USER_SHARE) == pytest.approx(0.5)
    assert estimate(store, Signal.COLD_ITEM_SHARE) == pytest.approx(0.75)
    seen = store.first_seen["events:0"]
    assert seen["i:i1"] == T0 and seen["i:i2"] == T0 + 9 * DAY_MS
    users = {k: v for k, v in seen.items() if k.startswith("u:")}
    assert sorted(users.values()) == [T0, T0 + 9 * DAY_MS]
    assert not any("u1" in k or "u2" in k for k in users)  # hashed, not the ids


def test_a_late_event_lowers_no_first_seen_time() -> None:
    events = [
        event("a", "u1", "i1", T0 + DAY_MS),
        event("late", "u1", "i1", T0),  # a day behind the watermark: rejected by the monitor
    ]
    store = run(events, batch=1)
    assert store.first_seen["events:0"]["i:i1"] == T0 + DAY_MS


def test_horizons_shorter_than_the_lateness_are_refused() -> None:
    monitor = MonitorConfig(window_ms=WINDOW_MS, allowed_lateness_ms=LATENESS_MS)
    with pytest.raises(ConfigError, match="arrival order"):
        DriftConfig(topics=TOPICS, user_monitor=monitor, cold_user_ms=LATENESS_MS)


def stream(seed: int, n: int) -> list[Interaction]:
    """Events of 6 users on 5 items whose times jump by minutes to days, so flags vary."""
    rng = random.Random(seed)
    t, out = T0, []
    for k in range(n):
        t += rng.choice((1_000, 30_000, HOUR_MS, 20 * HOUR_MS, 3 * DAY_MS))
        out.append(event(f"e{k}", f"u{rng.randrange(6)}", f"i{rng.randrange(5)}", t))
    return out


@settings(max_examples=40)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(5, 80),
    shuffle_seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(1, 20), min_size=1, max_size=30),
)
def test_cold_shares_do_not_depend_on_order_duplicates_or_batching(
    seed: int, n: int, shuffle_seed: int, cuts: list[int]
) -> None:
    ordered = stream(seed, n)
    rng = random.Random(shuffle_seed)
    # Bounded disorder: each event delayed by less than the lateness minus one window, so
    # nothing is late; a fifth of the events sent twice.
    jittered = ordered + [e for e in ordered if rng.random() < 0.2]
    delays = [rng.randrange(LATENESS_MS - WINDOW_MS) for _ in jittered]
    arrival = [
        e
        for _, _, e in sorted(
            zip(
                [e.event_time_ms + d for e, d in zip(jittered, delays, strict=True)],
                range(len(jittered)),
                jittered,
                strict=True,
            )
        )
    ]
    straight, shuffled = run(ordered, batch=7), run(arrival, batch=cuts)
    assert shuffled.first_seen == straight.first_seen
    # The whole monitor state, cold shares included (stored in other chunks, loaded the same).
    assert set(shuffled.drift) == set(straight.drift)
    for monitor in straight.drift:
        assert to_bytes(stored(shuffled, monitor)) == to_bytes(stored(straight, monitor))
