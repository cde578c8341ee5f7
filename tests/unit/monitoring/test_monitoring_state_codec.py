"""Monitor state ↔ bytes: round trips (whole, and saved as a core plus chunks), refusals, and the
converters from the topic models."""

from __future__ import annotations

import json
import random
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monitoring_streams import T0, drifting_stream, sensitive_config

from core.errors import SchemaError
from events import decode
from events.models import DriftDetection, Impression, ImpressionItem, Interaction
from monitoring import (
    Batch,
    EventSeen,
    MonitorConfig,
    MonitorState,
    PipelineSample,
    Saved,
    event_from_interaction,
    from_bytes,
    load,
    new_state,
    outcomes_from_impression,
    save,
    slate_from_impression,
    step,
    to_bytes,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 1_000), st.integers(50, 600), st.integers(1, 400))
def test_state_bytes_round_trip_exactly_at_any_point(seed, n, cut):
    config = sensitive_config()
    events, slates, outcomes = drifting_stream(seed, n)
    state = new_state(config)
    samples = [PipelineSample(T0 + 1000 * j, j, 0.5) for j in range(5)]
    state, *_ = step(
        state,
        Batch(events[:cut], slates[:cut], outcomes[:cut], samples),
        events[min(cut, n) - 1][0],
        config,
    )
    raw = to_bytes(state)
    assert to_bytes(from_bytes(raw, config)) == raw
    # ... and the open windows, detectors and exposure window carry on identically.
    rest = Batch(events[cut:], slates[cut:], outcomes[cut:])
    end = T0 + 10**6
    a = step(state, rest, end, config)
    b = step(from_bytes(raw, config), rest, end, config)
    assert a.detections == b.detections
    assert to_bytes(a.state) == to_bytes(b.state)


class ChunkStore:
    """What a state store keeps of one monitor: its core and its chunks."""

    def __init__(self) -> None:
        self.core = b""
        self.chunks: dict[str, bytes] = {}

    def write(self, saved: Saved) -> None:
        if saved.replace:
            self.chunks.clear()
        for name in saved.dropped:
            del self.chunks[name]  # a dropped chunk was stored
        self.chunks.update(saved.chunks)
        self.core = saved.core

    def load(self, config: MonitorConfig) -> MonitorState:
        return load(self.core, dict(self.chunks), config)


def chunked_observations(chunks: dict[str, bytes]) -> int:
    return sum(
        len(held["events"]) + len(held["slates"]) + len(held["outcomes"])
        for held in (json.loads(zlib.decompress(raw)) for raw in chunks.values())
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 1_000),
    n=st.integers(50, 400),
    cuts=st.lists(st.integers(1, 80), min_size=1, max_size=12),
    restarts=st.sets(st.integers(0, 12)),
)
def test_saved_chunks_load_the_state_that_was_saved_after_any_batch(seed, n, cuts, restarts):
    config = sensitive_config()
    events, slates, outcomes = drifting_stream(seed, n)
    rng = random.Random(seed)
    # Out of order within the lateness, some sent twice, some again with other content.
    again = [e._replace(event_type="click") for e in events if rng.random() < 0.05]
    events = sorted(
        events + rng.sample(events, n // 10) + again, key=lambda e: e[0] + rng.randrange(2_000)
    )
    store, state, start = ChunkStore(), new_state(config), 0
    for i, size in enumerate([*cuts, n * 2]):
        # A pipeline sample every other batch: detectors learn outside window closes too.
        sample = PipelineSample(T0 + i, i, lag_seconds=float(rng.randrange(5)), events=1)
        batch = Batch(
            events[start : start + size],
            slates[start : start + size],
            outcomes[start : start + size],
            (sample,) if i % 2 else (),
        )
        watermark = max((e[0] for e in batch.events), default=None)
        state, *_ = step(state, batch, watermark, config)
        saved = save(state)
        store.write(saved)
        core = zlib.decompress(saved.core).decode()  # canonical JSON, however it was assembled
        assert core == json.dumps(json.loads(core), sort_keys=True, separators=(",", ":"))
        # A chunk holds only what changed: never more observations than the batch had.
        assert chunked_observations(saved.chunks) <= len(batch)
        # Only open windows keep chunks, and a loaded state is the live one.
        assert {int(name.split(":")[0]) for name in store.chunks} == set(state.open)
        assert to_bytes(store.load(config)) == to_bytes(state)
        if i in restarts:
            state = store.load(config)  # the worker restarts and carries on from the store
        start += size
    assert start >= len(events)


def test_a_save_without_new_observations_writes_no_chunk_and_a_replaced_one_wins_in_any_order():
    config = sensitive_config()
    first = EventSeen(T0 + 10, "e1", "view", False, False)
    other = first._replace(event_type="click")  # same id, other content: "click" sorts first
    for order in ([first, other], [other, first]):
        state, store = new_state(config), ChunkStore()
        for event in order:
            step(state, Batch([event]), T0 + 20, config)
            store.write(save(state))
        assert len(store.chunks) == (2 if order[0] is first else 1)
        assert store.load(config).open[(T0 + 10) // config.window_ms].events["e1"] == other
        again = save(state)
        assert again.chunks == {} and again.dropped == [] and not again.replace
        assert again.core != store.core  # a new version, though the state is the same


def test_a_whole_state_loads_and_its_next_save_replaces_every_chunk():
    config = sensitive_config()
    events, slates, outcomes = drifting_stream(3, 200)
    state, *_ = step(new_state(config), Batch(events, slates, outcomes), events[-1][0], config)
    store = ChunkStore()
    store.core, store.chunks = to_bytes(state), {"1:0": b"left over"}  # a worker before chunks
    loaded = store.load(config)
    assert to_bytes(loaded) == to_bytes(state)
    saved = save(loaded)
    assert saved.replace and chunked_observations(saved.chunks) == sum(
        len(b.events) + len(b.slates) + len(b.outcomes) for b in state.open.values()
    )
    store.write(saved)
    assert to_bytes(store.load(config)) == to_bytes(state)


def test_a_missing_chunk_is_refused_and_a_left_over_one_ignored():
    config = sensitive_config()
    events, _, _ = drifting_stream(5, 100)
    state, store = new_state(config), ChunkStore()
    for cut in range(0, 100, 25):
        step(state, Batch(events[cut : cut + 25]), events[cut + 24][0], config)
        store.write(save(state))
    store.chunks["1:0"] = b"a window that closed long ago"
    assert to_bytes(store.load(config)) == to_bytes(state)
    del store.chunks[sorted(store.chunks)[0]]
    with pytest.raises(SchemaError) as info:
        store.load(config)
    assert info.value.reason == "monitor_state"


def test_unreadable_or_foreign_state_is_refused_with_a_reason():
    config = sensitive_config()
    with pytest.raises(SchemaError) as info:
        from_bytes(b"not zlib", config)
    assert info.value.reason == "monitor_state"
    good = json.loads(zlib.decompress(to_bytes(new_state(config))))
    with pytest.raises(SchemaError) as info:
        from_bytes(zlib.compress(json.dumps({**good, "river": "0.0.1"}).encode()), config)
    assert info.value.reason == "monitor_state_version"
    with pytest.raises(SchemaError) as info:
        from_bytes(zlib.compress(json.dumps({**good, "open": {"1": {}}}).encode()), config)
    assert info.value.reason == "monitor_state"


def test_decoded_topic_models_become_observations():
    event = Interaction(
        event_id="e1", event_type="dismiss", user_id="u", item_id="i", event_time=T0
    )
    assert event_from_interaction(event, cold_user=True) == (T0, "e1", "dismiss", True, False)
    impression = Impression(
        request_id="r1",
        user_id="u",
        event_time=T0,
        model_version="m1",
        experiment_arm="B",
        items=(
            ImpressionItem(item_id="a", position=0, score=2.5, source="ann", propensity=0.9),
            ImpressionItem(item_id="b", position=1, score=1.0, source="popular", propensity=0.1),
        ),
    )
    slate = slate_from_impression(impression, cold_items={"b"})
    assert slate.top_score == 2.5 and slate.arm == "B"
    assert [(i.item_id, i.source, i.cold) for i in slate.items] == [
        ("a", "ann", False),
        ("b", "popular", True),
    ]
    outcomes = outcomes_from_impression(impression, clicked={"b"}, dismissed={"a"})
    assert [(o.outcome_id, o.clicked, o.dismissed) for o in outcomes] == [
        ("r1|a", False, True),
        ("r1|b", True, False),
    ]


def test_a_detection_is_a_valid_drift_topic_message():
    payload = {
        "detection_id": "d1",
        "signal": "ctr",
        "segment": "arm=B",
        "detector": "ADWIN(delta=0.0005,clock=1)",
        "statistic": 0.035,
        "reference": 0.05,
        "window_start": "2026-01-01T00:00:00Z",
        "window_end": T0 + 10_000,
        "event_time": T0 + 9_999,
    }
    detection = decode(json.dumps(payload), DriftDetection)
    assert detection.window_start_ms == T0 and detection.window_end_ms == T0 + 10_000
    with pytest.raises(SchemaError):
        decode(json.dumps({**payload, "statistic": "high"}), DriftDetection)
