"""Batch handlers through the local harness: dead letters, impressions, catalogue, codecs."""

from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.codec import (
    decode_item_state,
    decode_update,
    decode_user_state,
    encode_dead_letter,
    encode_item_state,
    encode_update,
    encode_user_state,
)
from streams.eventtime import Lateness
from streams.item_features import ItemUpdate
from streams.testing import IMPRESSIONS, ITEMS, LocalPipeline, interaction, record

T0 = 1_700_000_000_000
HOUR = 3_600_000


def good(n: int, t: int = T0, event_type: str = "view") -> dict:
    return interaction(f"ok-{n}", "u1", f"i{n % 3}", event_type, t)


BAD_PAYLOADS = {
    b"{not json": "invalid_json",
    b"[1, 2]": "not_an_object",
    orjson.dumps({**good(0), "event_time": "yesterday"}): "bad_event_time",
    orjson.dumps({**good(0), "event_time": 5}): "bad_event_time",  # seconds-vs-ms mistake, 1970
    orjson.dumps({**good(0), "event_type": "teleport"}): "unknown_event_type",
    orjson.dumps({k: v for k, v in good(0).items() if k != "user_id"}): "missing_field",
    orjson.dumps({**good(0), "value": "five"}): "invalid_field",
    orjson.dumps({**good(0), "user_id": ""}): "invalid_field",
    b"\xff\xfe\x00": "invalid_utf8",
    b'{"event_id": "' + b"x" * 70_000 + b'"}': "too_large",
}


def test_each_bad_payload_is_a_dead_letter_with_its_reason_and_neighbours_are_applied() -> None:
    pipeline = LocalPipeline()
    batch = []
    for n, payload in enumerate(BAD_PAYLOADS):
        batch += [record(good(n)), record(payload, partition=0)]
    pipeline.feed(batch)
    assert [d.reason for d in pipeline.dead_letters] == list(BAD_PAYLOADS.values())
    assert pipeline.applied == len(BAD_PAYLOADS)


def test_far_future_event_is_a_dead_letter_and_does_not_move_the_watermark() -> None:
    pipeline = LocalPipeline(policy=Lateness(max_future_skew_ms=HOUR), now_ms=T0)
    future = interaction("f", "u1", "i0", "view", T0 + 2 * HOUR)
    pipeline.feed([record(good(0)), record(future), record(good(1, T0 + 1))])
    assert [d.reason for d in pipeline.dead_letters] == ["future_event_time"]
    assert pipeline.applied == 2 and not pipeline.late


def test_unicode_ids_round_trip_into_features() -> None:
    pipeline = LocalPipeline()
    pipeline.feed([record(interaction("é-1", "用户🙂", "ítem\u200b", "click", T0))])
    row = pipeline.user_rows()["用户🙂"]
    assert row.recent_items == ("ítem\u200b",)
    assert pipeline.item_rows()["ítem\u200b"].clicks == 1


def test_impressions_and_clicks_give_a_smoothed_ctr() -> None:
    pipeline = LocalPipeline()
    slate = {
        "request_id": "r1",
        "user_id": "u1",
        "event_time": T0,
        "model_version": "m1",
        "items": [
            {"item_id": "i0", "position": 0, "score": 1.0, "source": "ann", "propensity": 0.5},
            {"item_id": "i1", "position": 1, "score": 0.5, "source": "ann", "propensity": 0.5},
        ],
    }
    pipeline.feed([record(slate, topic=IMPRESSIONS)])
    pipeline.feed([record(slate, topic=IMPRESSIONS)])  # a re-delivered slate counts once
    pipeline.feed([record(good(0, T0 + 1, "click"))])
    rows = pipeline.item_rows()
    assert (rows["i0"].impressions, rows["i0"].clicks) == (1, 1)
    assert rows["i0"].ctr == pytest.approx(2 / 21)
    assert rows["i1"].ctr == pytest.approx(1 / 21)


def _slate(request_id: str, t: int, items: tuple[str, ...] = ("i0",)) -> dict:
    return {
        "request_id": request_id,
        "user_id": "u1",
        "event_time": t,
        "model_version": "m1",
        "items": [
            {"item_id": item, "position": p, "score": 1.0, "source": "ann", "propensity": 0.5}
            for p, item in enumerate(items)
        ],
    }


def test_a_slate_produced_again_counts_once_and_items_keep_no_event_ids() -> None:
    """A copy of a slate at a later offset (produced twice, or re-routed and then delivered
    again) is recognised by its request id on the impressions side, in the batch or after it,
    so the item state needs no memory of ids: however many slates show an item, its state holds
    counters only."""
    pipeline = LocalPipeline()
    pipeline.feed(
        [
            record(_slate("r1", T0), topic=IMPRESSIONS, partition=0, offset=0),
            record(_slate("r1", T0), topic=IMPRESSIONS, partition=0, offset=1),  # in the batch
            record(_slate("r2", T0 + 1), topic=IMPRESSIONS, partition=0, offset=2),
        ]
    )
    pipeline.feed([record(_slate("r2", T0 + 1), topic=IMPRESSIONS, partition=0, offset=3)])
    for n in range(50):
        pipeline.feed([record(_slate(f"s{n}", T0 + 2 + n), topic=IMPRESSIONS, partition=0)])
    assert pipeline.item_rows()["i0"].impressions == 52
    assert pipeline.duplicates == 2
    assert pipeline.items["i0"].seen == {}
    assert len(pipeline.impression_log) == 52  # a copy is not logged twice either


def test_the_slate_memory_forgets_what_lateness_rejects_anyway() -> None:
    policy = Lateness(allowed_lateness_ms=1_000, dedup_horizon_ms=HOUR)
    pipeline = LocalPipeline(policy=policy)
    pipeline.feed([record(_slate("old", T0), topic=IMPRESSIONS, partition=0)])
    assert set(pipeline.state.slates[0]) == {"old"}
    later = T0 + 2 * HOUR
    pipeline.feed([record(_slate("new", later), topic=IMPRESSIONS, partition=0)])
    assert set(pipeline.state.slates[0]) == {"new"}  # "old" is below the cutoff: forgotten
    pipeline.feed([record(_slate("old", T0), topic=IMPRESSIONS, partition=0)])
    assert len(pipeline.late) == 1  # its copy is late, never applied a second time
    assert pipeline.item_rows()["i0"].impressions == 2


def test_catalog_latest_update_wins_and_created_time_is_the_earliest() -> None:
    pipeline = LocalPipeline()
    newer = {"event_id": "c2", "item_id": "i9", "title": "New", "event_time": T0 + 10}
    older = {
        "event_id": "c1",
        "item_id": "i9",
        "title": "Old",
        "categories": ["Drama"],
        "event_time": T0,
        "created_time": T0 - HOUR,
    }
    pipeline.feed([record(newer, topic=ITEMS), record(older, topic=ITEMS)])
    row = pipeline.item_rows()["i9"]
    assert (row.title, row.categories, row.created_time_ms) == ("New", (), T0 - HOUR)
    assert row.event_time_ms == T0 + 10


def test_popularity_decays_with_event_time_not_arrival() -> None:
    pipeline = LocalPipeline()
    start = T0 // HOUR * HOUR  # bucket-aligned, so the decay is exactly one half-life
    pipeline.feed([record(interaction("a", "u1", "i0", "view", start))])
    fresh = pipeline.item_rows()["i0"].popularity
    pipeline.feed([record(interaction("b", "u1", "i1", "view", start + 24 * HOUR))])
    pipeline.feed([record(interaction("c", "u2", "i0", "view", start + 24 * HOUR))])
    assert fresh == 1.0
    assert pipeline.item_rows()["i0"].popularity == pytest.approx(1.0 + 0.5)


ids = st.text(min_size=1, max_size=8)


@given(
    st.builds(
        ItemUpdate,
        kind=st.sampled_from(["interaction", "impression", "catalog"]),
        item_id=ids,
        event_id=ids,
        event_time_ms=st.integers(0, 2**53),
        created_time_ms=st.none() | st.integers(0, 2**53),
        source=st.sampled_from(["", "events:1"]),
        source_offset=st.integers(-1, 2**53),  # a Kafka offset
    )
)
def test_item_update_codec_round_trips(update: ItemUpdate) -> None:
    decoded = decode_update(encode_update(update))
    assert (decoded.kind, decoded.item_id, decoded.event_id, decoded.event_time_ms) == (
        update.kind,
        update.item_id,
        update.event_id,
        update.event_time_ms,
    )


def test_state_codecs_round_trip() -> None:
    pipeline = LocalPipeline()
    pipeline.feed([record(good(n, T0 + n * 1000, t)) for n, t in enumerate(["view", "dismiss"])])
    user = pipeline.users["u1"]
    item = pipeline.items["i0"]
    assert decode_user_state(encode_user_state(user)) == user
    assert decode_item_state(encode_item_state(item)) == item


def test_an_item_state_saved_before_the_interaction_reference_keeps_its_popularity() -> None:
    """States written before ``interaction_ms`` existed referenced their mass at ``latest_ms``;
    one whose mass an impression had pruned away has no reference (issue 17)."""
    pipeline = LocalPipeline()
    pipeline.feed([record(good(0, T0 + 5 * HOUR, "click"))])
    item = pipeline.items["i0"]
    legacy = orjson.loads(encode_item_state(item))
    del legacy["i"]
    assert decode_item_state(orjson.dumps(legacy)) == item
    legacy["m"] = {}
    assert decode_item_state(orjson.dumps(legacy)).interaction_ms is None


def test_dead_letter_record_keeps_payload_reason_and_origin() -> None:
    raw = encode_dead_letter(
        payload=b"x" * 10,
        reason="invalid_json",
        error="e",
        topic="t",
        partition=2,
        offset=7,
        limit=4,
    )
    body = orjson.loads(raw)
    assert base64.b64decode(body["payload_b64"]) == b"xxxx" and body["truncated"]
    assert (body["reason"], body["source_partition"], body["source_offset"]) == (
        "invalid_json",
        2,
        7,
    )
