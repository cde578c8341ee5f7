"""Monitor state ↔ bytes: round trips, refusals, and the converters from the topic models."""

from __future__ import annotations

import json
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
    PipelineSample,
    event_from_interaction,
    from_bytes,
    new_state,
    outcomes_from_impression,
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
