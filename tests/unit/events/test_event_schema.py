"""The event contract: decoding rules, reasons for rejection, round trips, published schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import SchemaError
from events import EVENT_TYPES, Interaction, decode_interaction, encode
from events.schemas import TOPIC_MODELS, schema_path, schema_text

GOOD = {
    "event_id": "e1",
    "event_type": "click",
    "user_id": "u1",
    "item_id": "i1",
    "event_time": "2026-11-22T10:00:00+01:00",
}


def raw(**changes: object) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def test_rfc3339_with_offset_and_epoch_millis_mean_the_same_instant():
    a = decode_interaction(raw(event_time="2026-11-22T10:00:00+01:00"))
    b = decode_interaction(raw(event_time=1_795_338_000_000))
    assert a.event_time == b.event_time == datetime(2026, 11, 22, 9, tzinfo=UTC)
    assert a.event_time_ms == 1_795_338_000_000


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b"\xff\xfe", "invalid_utf8"),
        (raw(event_id=...), "missing_field"),
        (raw(event_type="like"), "unknown_event_type"),
        (raw(event_time="2026-11-22T10:00:00"), "bad_event_time"),  # no offset
        (raw(event_time=1_700_000_000), "bad_event_time"),  # seconds, not milliseconds
        (raw(event_time=True), "bad_event_time"),
        (raw(user_id=""), "invalid_field"),
        (raw(item_id="x" * 129), "invalid_field"),
        (raw(value="high"), "invalid_field"),
        (raw(surprise=1), "invalid_field"),
        (raw(context={"device": 3}), "invalid_field"),
        (raw(user_id="u" * 10, item_id="i" * 100) + b" " * 70_000, "too_large"),
    ],
)
def test_bad_events_are_rejected_with_a_reason(payload: bytes, reason: str):
    with pytest.raises(SchemaError) as info:
        decode_interaction(payload)
    assert info.value.reason == reason
    assert str(info.value)


ids = st.text(min_size=1, max_size=128)
interactions = st.builds(
    Interaction,
    event_id=ids,
    event_type=st.sampled_from(EVENT_TYPES),
    user_id=ids,
    item_id=ids,
    event_time=st.integers(min_value=631_152_000_000, max_value=7_258_118_399_999),
    value=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    request_id=st.none() | ids,
    context=st.dictionaries(st.text(max_size=64), st.text(max_size=256), max_size=32),
)


@given(interactions)
def test_encode_then_decode_is_the_identity(event: Interaction):
    assert decode_interaction(encode(event), max_bytes=1 << 20) == event


@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_never_raises_anything_but_schema_error(payload: bytes):
    try:
        decode_interaction(payload)
    except SchemaError as exc:
        assert exc.reason


@pytest.mark.parametrize("topic", sorted(TOPIC_MODELS))
def test_published_json_schemas_match_the_models(topic: str):
    assert schema_path(topic).read_text() == schema_text(topic), (
        "events/schemas is stale: run `python -m events.schemas`"
    )
