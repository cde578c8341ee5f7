"""``streams.fast_decode.decode_interaction`` equals the validated ``events`` decoder: the same
``Interaction`` (field values, field order, fields set, JSON dump) where that decoder accepts,
the same ``SchemaError`` reason where it rejects — on plain payloads, on mutated ones and on
arbitrary bytes."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import SchemaError
from events import decode_interaction as validated
from events.models import MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS, Interaction
from streams.fast_decode import decode_interaction as fast

FIELDS = list(Interaction.model_fields)

good_ids = st.one_of(st.text(min_size=1, max_size=128), st.sampled_from(["u1", "é" * 128]))
bad_ids = st.one_of(st.just(""), st.text(min_size=129, max_size=130), st.integers(), st.none())
good_times = st.integers(MIN_EVENT_TIME_MS, MAX_EVENT_TIME_MS - 1)
bad_times = st.one_of(
    st.integers(MIN_EVENT_TIME_MS - 5, MIN_EVENT_TIME_MS - 1),
    st.integers(MAX_EVENT_TIME_MS, MAX_EVENT_TIME_MS + 5),
    st.floats(allow_nan=False),
    st.sampled_from(["2026-12-03T10:00:00Z", "2026-12-03T10:00:00", True, None]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**60), 2**60),
    st.floats(),
    st.text(max_size=3),
)
good_values = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**53), 2**53),
)
bad_values = st.one_of(scalars, st.integers(2**53 - 3, 2**53 + 3), st.integers(-(2**60), 2**60))
good_contexts = st.dictionaries(st.text(max_size=64), st.text(max_size=256), max_size=32)
bad_contexts = st.one_of(
    st.dictionaries(st.text(max_size=66), st.text(max_size=258), min_size=1, max_size=34),
    st.dictionaries(st.text(max_size=3), scalars, min_size=1, max_size=3),
    scalars,
)
good_types = st.sampled_from(["view", "click", "add_to_cart", "purchase", "rating", "dismiss"])
bad_types = st.one_of(st.sampled_from(["View", "like", "", " view"]), scalars)


def _either(draw: st.DrawFn, good: st.SearchStrategy, bad: st.SearchStrategy) -> object:
    """Mostly valid, so that both paths' acceptances are compared as often as rejections."""
    return draw(bad) if draw(st.integers(0, 7)) == 0 else draw(good)


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, object]:
    body: dict[str, object] = {
        "event_id": _either(draw, good_ids, bad_ids),
        "event_type": _either(draw, good_types, bad_types),
        "user_id": _either(draw, good_ids, bad_ids),
        "item_id": _either(draw, good_ids, bad_ids),
        "event_time": _either(draw, good_times, bad_times),
    }
    optional = {
        "value": (good_values, bad_values),
        "request_id": (st.one_of(st.none(), good_ids), bad_ids),
        "context": (good_contexts, bad_contexts),
        "schema_version": (st.just(1), st.sampled_from([2, 1.0, True, "1", None])),
        "extra": (scalars, scalars),
    }
    for name, (good, bad) in optional.items():
        if draw(st.booleans()) and (name != "extra" or draw(st.integers(0, 7)) == 0):
            body[name] = _either(draw, good, bad)
    if draw(st.integers(0, 15)) == 0:
        body.pop(draw(st.sampled_from(FIELDS)), None)  # now and then a required field missing
    return body


def _outcome(decoder, raw: bytes) -> tuple[str, object]:
    try:
        event = decoder(raw, max_bytes=4096)
    except SchemaError as exc:
        return "rejected", exc.reason
    fields = {name: getattr(event, name) for name in FIELDS}
    return "decoded", (
        list(fields.items()),
        [type(v) for v in fields.values()],
        sorted(event.model_fields_set),
        event.event_time_ms,
        event.model_dump_json(),
        event,
    )


def _plain_bytes(body: dict[str, object]) -> bytes | None:
    try:
        return orjson.dumps(body)
    except TypeError:  # orjson refuses ints past 64 bits: nothing the wire would carry
        return None


@settings(max_examples=600)
@given(payloads())
def test_the_fast_path_decodes_and_rejects_exactly_as_validation(body: dict[str, object]) -> None:
    raw = _plain_bytes(body)
    if raw is None:
        return
    assert _outcome(fast, raw) == _outcome(validated, raw)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_rejected_with_the_same_reason(raw: bytes) -> None:
    assert _outcome(fast, raw) == _outcome(validated, raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event_id":"e","event_type":"view","user_id":"u","item_id":"i","event_time":1700000000000,"value":NaN}',
        b'{"event_id":"e","event_type":"view","user_id":"u","item_id":"i","event_time":1700000000000,"value":1e400}',
        b'{"event_id":"e","event_id":"f","event_type":"view","user_id":"u","item_id":"i","event_time":1700000000000}',
        b'{"event_id":"\\ud800","event_type":"view","user_id":"u","item_id":"i","event_time":1700000000000}',
        b'\xef\xbb\xbf{"event_id":"e","event_type":"view","user_id":"u","item_id":"i","event_time":1700000000000}',
        b'{"event_id":"e","event_type":"view","user_id":"u","item_id":"i","event_time":17000000000000000000000}',
        b'{"event_id":"e","event_type":"view","user_id":"u","item_id":"i","event_time":1700000000000,"value":-0.0}',
        b'{"event_id":"e","event_type":"view","user_id":"u","item_id":"i","event_time":1700000000000,"value":0.1}',
        b' {"event_id":"e","event_type":"view","user_id":"u","item_id":"i","event_time":1700000000000}\n',
        b'{"event_id":"e","event_type":"view","user_id":"u","item_id":"i","event_time":1700000000000} x',
    ],
)
def test_json_corner_cases_agree(raw: bytes) -> None:
    assert _outcome(fast, raw) == _outcome(validated, raw)


def test_a_payload_over_the_size_limit_is_too_large_on_both_paths() -> None:
    body = orjson.dumps(
        {
            "event_id": "e",
            "event_type": "view",
            "user_id": "u",
            "item_id": "i",
            "event_time": 1_700_000_000_000,
            "context": {"k": "v" * 200},
        }
    )
    with pytest.raises(SchemaError) as caught:
        fast(body, max_bytes=len(body) - 1)
    assert caught.value.reason == "too_large"
    assert fast(body, max_bytes=len(body)) == validated(body, max_bytes=len(body))


def test_the_plain_shape_takes_the_fast_path() -> None:
    """The replay's payloads never reach the validated decoder (so the speed-up is real)."""
    raw = orjson.dumps(
        {
            "user_id": "1",
            "item_id": "2",
            "event_time": 978_300_760_000,
            "value": 5.0,
            "event_id": "ml-1m:1:2:rating",
            "event_type": "rating",
        }
    )
    from unittest import mock

    with mock.patch("streams.fast_decode.validated_interaction", side_effect=AssertionError):
        event = fast(raw)
    assert event == validated(raw)
    assert event.value == 5.0 and event.event_time_ms == 978_300_760_000
